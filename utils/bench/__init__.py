"""What the benchmark and experiment scripts in tools/ share: measured child runs, the report's machine line,
command and charts, and the README sections they rewrite."""
