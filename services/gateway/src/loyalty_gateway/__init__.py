"""The gateway: the public API for tills, app backends and admins. Its RPCs answer UNIMPLEMENTED
until the gateway issue lands (after the services it calls)."""
