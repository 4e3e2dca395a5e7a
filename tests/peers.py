"""One interface over the two Proxmox peers the conformance suite runs against: fakepve (a
third-party fake following the PVE 9 schema) and pxproxy's own lab. A test written against a
Peer runs against both, so their shapes and errors must agree."""

from __future__ import annotations

from typing import Protocol

from .fakes import TestPve


class Peer(Protocol):
    name: str
    url: str
    fingerprint: str
    root_password: str

    def add_token(self, tokenid: str, secret: str) -> None: ...

    def add_node(self, node: str) -> None: ...

    def add_ct(
        self, vmid: int, name: str, *, node: str = "pve1", running: bool = False, cidr: str = ""
    ) -> None: ...

    def add_vm(
        self,
        vmid: int,
        name: str,
        *,
        node: str = "pve1",
        running: bool = False,
        agent_ips: tuple[str, ...] | None = None,
        cloudinit_cidr: str = "",
    ) -> None: ...

    def set_node_offline(self, node: str) -> None: ...

    def expire_tickets(self) -> None: ...

    def restrict(self, user: str, path: str, *privileges: str) -> None:
        """From now on `user` holds only what restrict() granted it."""

    def fail_start(self, vmid: int, message: str) -> None: ...

    def status(self, vmid: int) -> str: ...

    def count(self, suffix: str, method: str = "GET") -> int: ...


class FakePvePeer:
    name = "fakepve"

    def __init__(self, pve: TestPve, fingerprint: str) -> None:
        self.pve = pve
        self.url = pve.url
        self.fingerprint = fingerprint
        self.root_password = "secret"

    def add_token(self, tokenid: str, secret: str) -> None:
        self.pve.apitokens[tokenid] = secret

    def add_node(self, node: str) -> None:
        self.pve.add_node(node)

    def add_ct(
        self, vmid: int, name: str, *, node: str = "pve1", running: bool = False, cidr: str = ""
    ) -> None:
        net = f"name=eth0,bridge=vmbr0,ip={cidr or 'dhcp'}"
        self.pve.add_ct(
            vmid, name, node=node, status="running" if running else "stopped", config={"net0": net}
        )

    def add_vm(
        self,
        vmid: int,
        name: str,
        *,
        node: str = "pve1",
        running: bool = False,
        agent_ips: tuple[str, ...] | None = None,
        cloudinit_cidr: str = "",
    ) -> None:
        config = {"ipconfig0": f"ip={cloudinit_cidr}"} if cloudinit_cidr else {}
        vm = self.pve.add_vm(
            vmid, name, node=node, status="running" if running else "stopped", config=config
        )
        if agent_ips is not None:
            vm.agent = {
                "interfaces": [
                    {
                        "name": "eth0",
                        "ip-addresses": [
                            {
                                "ip-address": ip,
                                "ip-address-type": "ipv6" if ":" in ip else "ipv4",
                                "prefix": 64 if ":" in ip else 24,
                            }
                            for ip in agent_ips
                        ],
                    }
                ]
            }

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
