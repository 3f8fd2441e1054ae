"""The front ends' shared code: the HTTP server app, the desktop window and the microphone recorder."""
