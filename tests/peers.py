"""One interface over the two Proxmox peers the conformance suite runs against: fakepve (a
third-party fake following the PVE 9 schema) and pxproxy's own lab. A test written against a
Peer runs against both, so their shapes and errors must agree."""

from __future__ import annotations

from typing import Protocol

from pxproxy.lab.server import LabServer

from .fakes import TestPve


class Peer(Protocol):
    name: str
    url: str
    fingerprint: str
    root_password: str

    def add_token(self, tokenid: str, secret: str) -> None: ...

    def add_node(self, node: str) -> None: ...

    def add_ct(
        self,
        vmid: int,
        name: str,
        *,
        node: str = "pve1",
        running: bool = False,
        static: bool = False,
    ) -> None:
        """A container; `static`: its address is in its config (else DHCP)."""

    def add_vm(
        self,
        vmid: int,
        name: str,
        *,
        node: str = "pve1",
        running: bool = False,
        agent: bool = False,
        cloudinit: bool = False,
    ) -> None:
        """A VM reporting addresses through its guest agent, or cloud-init config, or neither."""

    def addresses(self, vmid: int) -> tuple[str, ...]:
        """The addresses the peer gave the guest, as pxproxy should resolve them."""

    def set_node_offline(self, node: str) -> None: ...

    def expire_tickets(self) -> None: ...

    def restrict(self, user: str, path: str, *privileges: str) -> None:
        """From now on `user` holds only what restrict() granted it."""

    def fail_start(self, vmid: int, message: str) -> None: ...

    def status(self, vmid: int) -> str: ...

    def count(self, suffix: str, method: str = "GET") -> int: ...


def _v4(prefix: str, vmid: int) -> str:
    return f"{prefix}.{vmid // 256 % 256}.{vmid % 256}"


class FakePvePeer:
    name = "fakepve"

    def __init__(self, pve: TestPve, fingerprint: str) -> None:
        self.pve = pve
        self.url = pve.url
        self.fingerprint = fingerprint
        self.root_password = "secret"
        self._addresses: dict[int, tuple[str, ...]] = {}

    def add_token(self, tokenid: str, secret: str) -> None:
        self.pve.apitokens[tokenid] = secret

    def add_node(self, node: str) -> None:
        self.pve.add_node(node)

    def add_ct(
        self,
        vmid: int,
        name: str,
        *,
        node: str = "pve1",
        running: bool = False,
        static: bool = False,
    ) -> None:
        ip = _v4("10.0", vmid)
        net = f"name=eth0,bridge=vmbr0,ip={ip + '/24' if static else 'dhcp'}"
        self.pve.add_ct(
            vmid, name, node=node, status="running" if running else "stopped", config={"net0": net}
        )
        if static:
            self._addresses[vmid] = (ip,)
        elif running:
            # fakepve derives /interfaces from the config; give the DHCP lease explicitly.
            self.pve.interfaces_override[vmid] = [
                {"name": "eth0", "inet": f"{ip}/24", "hwaddr": "bc:24:11:00:00:01"}
            ]
            self._addresses[vmid] = (ip,)

    def add_vm(
        self,
        vmid: int,
        name: str,
        *,
        node: str = "pve1",
        running: bool = False,
        agent: bool = False,
        cloudinit: bool = False,
    ) -> None:
        config = {"ipconfig0": f"ip={_v4('10.2', vmid)}/24"} if cloudinit else {}
        vm = self.pve.add_vm(
            vmid, name, node=node, status="running" if running else "stopped", config=config
        )
        if cloudinit:
            self._addresses[vmid] = (_v4("10.2", vmid),)
        if agent:
            ip = _v4("10.1", vmid)
            vm.agent = {
                "interfaces": [
                    {
                        "name": "eth0",
                        "ip-addresses": [
                            {"ip-address": ip, "ip-address-type": "ipv4", "prefix": 24}
                        ],
                    }
                ]
            }
            if running:
                self._addresses[vmid] = (ip,)

    def addresses(self, vmid: int) -> tuple[str, ...]:
        return self._addresses.get(vmid, ())

    def set_node_offline(self, node: str) -> None:
        self.pve.set_node_offline(node)

    def expire_tickets(self) -> None:
        self.pve.revoke_tickets()

    def restrict(self, user: str, path: str, *privileges: str) -> None:
        self.pve.grant(user, path, *privileges)

    def fail_start(self, vmid: int, message: str) -> None:
        self.pve.guest(vmid).start_error = message

    def status(self, vmid: int) -> str:
        return str(self.pve.guest(vmid).status)

    def count(self, suffix: str, method: str = "GET") -> int:
        return self.pve.count(suffix, method)


class LabPeer:
    name = "lab"

    def __init__(self, server: LabServer) -> None:
        self.server = server
        self.lab = server.cluster
        self.url = server.url
        self.fingerprint = server.fingerprint
        self.root_password = server.credentials.root_password

    def add_token(self, tokenid: str, secret: str) -> None:
        self.server.access.tokens[tokenid] = secret

    def add_node(self, node: str) -> None:
        self.lab.add_node(node)

    def add_ct(
        self,
        vmid: int,
        name: str,
        *,
        node: str = "pve1",
        running: bool = False,
        static: bool = False,
    ) -> None:
        self.lab.add_guest(
            vmid,
            "lxc",
            name,
            node,
            status="running" if running else "stopped",
            static_ip=static,
            boot_time_s=0.0,
        )

    def add_vm(
        self,
        vmid: int,
        name: str,
        *,
        node: str = "pve1",
        running: bool = False,
        agent: bool = False,
        cloudinit: bool = False,
    ) -> None:
        self.lab.add_guest(
            vmid,
            "qemu",
            name,
            node,
            status="running" if running else "stopped",
            agent=agent,
            static_ip=cloudinit,
            boot_time_s=0.0,
        )

    def addresses(self, vmid: int) -> tuple[str, ...]:
        g = self.lab.guests[vmid]
        known = g.static_ip or (g.status == "running" and (g.type == "lxc" or g.agent))
        return (g.ip,) if known else ()

    def set_node_offline(self, node: str) -> None:
        self.lab.set_node_online(node, False)

    def expire_tickets(self) -> None:
        self.server.access.expire_tickets()

    def restrict(self, user: str, path: str, *privileges: str) -> None:
        self.server.access.grant(user, path, *privileges)

    def fail_start(self, vmid: int, message: str) -> None:
        self.lab.guests[vmid].fail_start = message

    def status(self, vmid: int) -> str:
        return self.lab.guests[vmid].status

    def count(self, suffix: str, method: str = "GET") -> int:
        return self.server.api.count(suffix, method)
