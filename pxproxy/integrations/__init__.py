"""What other programs poll or are configured with: Traefik's HTTP provider, Prometheus HTTP
service discovery, the Ansible inventory, and the recipes for Traefik, Caddy, nginx, HAProxy."""
