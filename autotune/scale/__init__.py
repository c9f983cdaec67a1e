"""Many workers on one study: worker processes, leases and profile locks."""
