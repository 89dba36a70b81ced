"""The fraud service. Its RPCs answer UNIMPLEMENTED until the issue that builds its domain lands."""
