"""Security tests: MQTT over TLS with per-agent ACLs, SNMPv3, secrets kept out of output, refused commands."""
