package org.whisperfinetune.core

/** The file is not a whisper.cpp GGML model this app can run; the message is one sentence for the screen. */
class ModelCheckException(message: String) : Exception(message)

/** The audio cannot be decoded; the message names the file and the problem in one sentence. */
class AudioDecodeException(message: String) : Exception(message)

/** whisper.cpp failed while transcribing (not a cancel, which is a CancellationException). */
class TranscriptionException(message: String) : Exception(message)

/** A downloaded or imported model did not pass its size or sha256 check, or could not be stored. */
class ModelStoreException(message: String) : java.io.IOException(message)
