"""The top floor: the `trainpipe` command line. It calls flows and the library; nothing imports it."""
