"""What the benchmark and experiment scripts in tools/ share: measured child runs, README sections."""
