"""Device models, value codec, telemetry wire format and plant physics: pure, no I/O."""
