"""PUT /nodes/{node}/{lxc|qemu}/{vmid}/config over real HTTP: notes and tags as PVE stores
them, a digest that follows every change, delete, the digest check, auth, CSRF, privilege."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster

from ..support import set_notes

API = "/api2/json"


class Http:
    """Raw requests to the lab, token or ticket, form or JSON."""

    def __init__(self, lab: LabServer) -> None:
        self.lab = lab
        self.token = f"PVEAPIToken={lab.credentials.token_id}={lab.credentials.token_secret}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        connector = aiohttp.TCPConnector(ssl=False)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(
                method,
                self.lab.url + API + path,
                data=data,
                json=json_body,
                headers={"Authorization": self.token} if headers is None else headers,
            ) as resp,
        ):
            return resp.status, json.loads(await resp.read())

    async def config(self, path: str) -> dict[str, Any]:
        status, body = await self.call("GET", path)
        assert status == 200
        data: dict[str, Any] = body["data"]
        return data

    async def ticket(self) -> tuple[str, str]:
        password = self.lab.credentials.root_password
        status, body = await self.call(
            "POST", "/access/ticket", data={"username": "root@pam", "password": password}
        )
        assert status == 200
        return body["data"]["ticket"], body["data"]["CSRFPreventionToken"]


CT = "/nodes/pve1/lxc/7201/config"
VM = "/nodes/pve1/qemu/7202/config"


@pytest.fixture
def http(lab_server: LabServer) -> Http:
    lab_server.cluster.add_guest(7201, "lxc", "wiki", "pve1")
    lab_server.cluster.add_guest(7202, "qemu", "db", "pve1", status="running")
    return Http(lab_server)


async def test_description_and_tags_are_stored_and_shown(http: Http) -> None:
    before = await http.config(CT)
    assert "description" not in before
    status, body = await http.call(
        "PUT", CT, data={"description": "# Wiki\n\nnotes", "tags": "Web, PXPROXY;db web"}
    )
    assert (status, body) == (200, {"data": None})
    after = await http.config(CT)
    assert after["description"] == "# Wiki\n\nnotes"
    # PVE's default tag style: lowercased, sorted, each once.
    assert after["tags"] == "db;pxproxy;web"
    assert after["digest"] != before["digest"]
    assert len(after["digest"]) == 40
    _, resources = await http.call("GET", "/cluster/resources?type=vm")
    (entry,) = [e for e in resources["data"] if e["vmid"] == 7201]
    assert entry["tags"] == "db;pxproxy;web"


async def test_the_digest_is_stable_and_follows_every_change(http: Http) -> None:
    first = (await http.config(VM))["digest"]
    assert (await http.config(VM))["digest"] == first
    await http.call("PUT", VM, data={"tags": "a"})
    second = (await http.config(VM))["digest"]
    await http.call("PUT", VM, data={"tags": "a"})  # the same value: the same config
    assert (await http.config(VM))["digest"] == second
    await http.call("PUT", VM, data={"description": "x"})
    assert (await http.config(VM))["digest"] not in (first, second)


async def test_json_body_and_delete(http: Http) -> None:
    status, _ = await http.call("PUT", CT, json_body={"description": "hello", "tags": "x y"})
    assert status == 200
    status, body = await http.call("PUT", CT, data={"delete": "description,tags"})
    assert (status, body) == (200, {"data": None})
    config = await http.config(CT)
    assert "description" not in config
    assert "tags" not in config


async def test_a_stale_digest_is_refused_as_pve_does(http: Http) -> None:
    stale = (await http.config(CT))["digest"]
    await http.call("PUT", CT, data={"description": "someone else"})
    status, body = await http.call("PUT", CT, data={"description": "mine", "digest": stale})
    assert status == 500
    assert body["message"] == (
        "detected modified configuration - file changed by other user? Try again.\n"
    )
    assert (await http.config(CT))["description"] == "someone else"
    vm_stale = (await http.config(VM))["digest"]
    await http.call("PUT", VM, data={"tags": "b"})
    status, body = await http.call("PUT", VM, data={"tags": "c", "digest": vm_stale})
    assert status == 500
    assert body["message"] == "checksum missmatch (file change by other user?)\n"
    current = (await http.config(CT))["digest"]
    status, _ = await http.call("PUT", CT, data={"description": "mine", "digest": current})
    assert status == 200


async def test_parameter_errors(http: Http) -> None:
    status, body = await http.call("PUT", CT, data={})
    assert (status, body["message"]) == (500, "no options specified\n")
    status, body = await http.call("PUT", CT, data={"tags": "ok,not/ok"})
    assert status == 400
    assert body["errors"] == {"tags": "invalid format - invalid characters in tag"}
    status, body = await http.call("PUT", CT, data={"description": "x" * 8193})
    assert status == 400
    assert body["errors"] == {"description": "value may only be 8192 characters long"}
    status, body = await http.call("PUT", CT, data={"tags": "a", "delete": "tags"})
    assert status == 400
    assert "delete" in body["errors"]
    status, body = await http.call("PUT", CT, data={"delete": "memory2"})
    assert (status, body["errors"]) == (400, {"delete": "unknown option 'memory2'"})
    assert "tags" not in await http.config(CT)


async def test_a_ticket_needs_csrf(http: Http) -> None:
    ticket, csrf = await http.ticket()
    cookie = {"Cookie": f"PVEAuthCookie={ticket}"}
    status, body = await http.call("PUT", CT, data={"tags": "a"}, headers=cookie)
    assert (status, body["message"]) == (401, "Permission denied - invalid csrf token\n")
    with_csrf = {**cookie, "CSRFPreventionToken": csrf}
    status, _ = await http.call("PUT", CT, data={"tags": "a"}, headers=with_csrf)
    assert status == 200
    assert (await http.config(CT))["tags"] == "a"


async def test_it_needs_vm_config_options(http: Http, lab_server: LabServer) -> None:
    lab_server.access.tokens["viewer@pve!ro"] = "viewer-secret"
    lab_server.access.grant("viewer@pve!ro", "/vms", "VM.Audit")
    viewer = {"Authorization": "PVEAPIToken=viewer@pve!ro=viewer-secret"}
    status, body = await http.call("PUT", CT, data={"tags": "a"}, headers=viewer)
    assert (status, body["message"]) == (
        403,
        "Permission check failed (/vms/7201, VM.Config.Options)\n",
    )
    lab_server.access.grant("viewer@pve!ro", "/vms/7201", "VM.Config.Options")
    status, _ = await http.call("PUT", CT, data={"tags": "a"}, headers=viewer)
    assert status == 200


async def test_a_locked_guest_refuses(http: Http, lab_server: LabServer) -> None:
    lab_server.cluster.guests[7201].lock = "suspended"
    status, body = await http.call("PUT", CT, data={"tags": "a"})
    assert (status, body["message"]) == (500, "CT is locked (suspended)\n")


async def test_set_notes_goes_through_the_api(http: Http, lab_server: LabServer) -> None:
    await set_notes(lab_server, 7202, description="notes", tags=["pxproxy", "Web"])
    assert lab_server.api.count("/qemu/7202/config", "PUT") == 1
    config = await http.config(VM)
    assert (config["description"], config["tags"]) == ("notes", "pxproxy;web")
    await set_notes(lab_server, 7202, description="", tags=[])
    config = await http.config(VM)
    assert "description" not in config
    assert "tags" not in config


def test_scenarios_may_set_description_and_tags() -> None:
    lab = LabCluster.from_spec(
        {
            "guests": [
                {"vmid": 7203, "type": "lxc", "name": "a", "description": "hi", "tags": "x;y"},
                {"vmid": 7204, "type": "lxc", "name": "b", "tags": ["pxproxy"]},
            ]
        }
    )
    assert lab.guests[7203].description == "hi"
    assert lab.guests[7203].tags == ("x", "y")
    assert lab.guests[7204].tags == ("pxproxy",)
