"""Hardware simulators: protocol servers built from device models, site physics, the demo."""
