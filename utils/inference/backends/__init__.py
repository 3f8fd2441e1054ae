"""One module per engine, each a Transcriber subclass; utils.inference.registry names them."""
