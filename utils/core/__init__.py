"""Foundations every layer uses, importable without torch: audio decoding, languages and tasks, text
normalisation and error rates, user errors and exit statuses, atomic file writes, the command line,
devices, and finding and loading model folders."""
