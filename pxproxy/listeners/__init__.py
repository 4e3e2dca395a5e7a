"""What the API and the proxy listeners share: bounded request heads, header timeouts,
per-client connection limits, one-line logs of rejected requests and the `Server` header."""
