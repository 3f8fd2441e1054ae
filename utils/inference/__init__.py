"""The one transcription interface: Transcriber types, the backend registry, output writers and the
run every front end shares; the engines live in backends/, one module each."""
