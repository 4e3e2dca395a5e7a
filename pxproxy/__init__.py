"""pxproxy: a Proxmox VE companion for reverse proxies."""

__version__ = "0.1.0"
