"""System-1.5 reasoning (SPEC §3.5): routers, adapters, the shortcut layer, the method, the test-time grid."""
