package org.whisperfinetune.android

import android.app.Application
import android.content.Context
import android.net.Uri
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import java.io.File
import java.io.IOException
import java.util.Locale
import java.util.concurrent.atomic.AtomicBoolean
import kotlin.concurrent.thread
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import org.whisperfinetune.core.AudioDecodeException
import org.whisperfinetune.core.ModelCheckException
import org.whisperfinetune.core.TranscriptionException
import org.whisperfinetune.core.WhisperContext

/** All work happens here, off the main thread; the screens only read [state] and call these methods. */
class WhisperViewModel(application: Application) : AndroidViewModel(application) {
    private val app: Application get() = getApplication()
    private val prefs = application.getSharedPreferences("settings", Context.MODE_PRIVATE)
    private val models = ModelFiles(application)
    private val engine = Engine()
    private val stopRequested = AtomicBoolean(false)
    private var job: Job? = null

    /** The audio last transcribed: the benchmark measures on it. */
    @Volatile
    private var lastAudio: FloatArray? = null

    private val _state = MutableStateFlow(UiState(settings = readSettings()))
    val state: StateFlow<UiState> = _state.asStateFlow()

    init {
        launchWork(null) { refreshModels() }
    }

    fun loadModel(entry: ModelEntry) = launchWork(Busy.LoadingModel) {
        load(models.fileFor(entry))
    }

    fun importModel(uri: Uri) = launchWork(Busy.ImportingModel) {
        load(models.import(uri))
    }

    fun downloadModel(url: String, sha256: String) = launchWork(Busy.Downloading(0, null)) {
        var shown = 0L
        val file = models.download(url.trim(), sha256) { done, total ->
            // Progress comes every 64 KiB: show every 4 MiB.
            if (done - shown >= PROGRESS_STEP) {
                shown = done
                _state.update { it.copy(busy = Busy.Downloading(done, total)) }
            }
        }
        load(file)
    }

    fun deleteModel(entry: ModelEntry) = launchWork(null) {
        if (_state.value.loaded?.name == entry.name) {
            engine.close()
            _state.update { it.copy(loaded = null) }
        }
        models.delete(entry)
        refreshModels()
    }

    fun transcribeFile(uri: Uri) = launchWork(Busy.DecodingAudio) {
        val name = AudioFiles.displayName(app, uri)
        transcribe(AudioFiles.decode(app, uri), name ?: "the picked file")
    }

    fun startRecording() = launchWork(Busy.Recording(0f)) {
        stopRequested.set(false)
        val samples = Recorder.record(app, stopRequested) { seconds ->
            _state.update { it.copy(busy = Busy.Recording(seconds)) }
        }
        transcribe(samples, "the recording")
    }

    /** Ends the recording; what was recorded is then transcribed. */
    fun stopRecording() = stopRequested.set(true)

    fun runBenchmark() = launchWork(Busy.Benchmarking) {
        // Without audio of its own, 10 s of silence: the encoder's time is the same, decoding has less to do.
        val samples = lastAudio ?: FloatArray(10 * 16_000)
        val result = engine.benchmark(samples, _state.value.settings.toParams())
        _state.update { it.copy(benchmark = result, systemInfo = WhisperContext.systemInfo()) }
    }

    /** Stops whatever runs: a download, a decode, a recording (discarded) or whisper.cpp itself. */
    fun cancel() {
        if (job?.isActive != true) return
        engine.cancel()
        job?.cancel()
    }

    fun updateSettings(settings: Settings) {
        _state.update { it.copy(settings = settings) }
        prefs.edit()
            .putString(KEY_LANGUAGE, settings.language)
            .putBoolean(KEY_TRANSLATE, settings.translate)
            .putInt(KEY_THREADS, settings.threads)
            .putInt(KEY_BEAM_SIZE, settings.beamSize)
            .apply()
    }

    fun dismissMessage() = _state.update { it.copy(message = null) }

    fun microphoneRefused() = _state.update {
        it.copy(message = "Recording needs the microphone: allow it when asked, or in the system settings.")
    }

    override fun onCleared() {
        engine.cancel()
        // close() waits for a running transcription to notice the cancel: not on the main thread.
        thread(name = "whisper-close") { engine.close() }
    }

    // These run inside launchWork's job, already on Dispatchers.IO: each blocking call simply blocks it.

    private fun load(file: File) {
        _state.update { it.copy(busy = Busy.LoadingModel, loaded = null) }
        val info = engine.load(file)
        _state.update { it.copy(loaded = LoadedModel(file.name, info)) }
        refreshModels()
    }

    private fun transcribe(samples: FloatArray, source: String) {
        lastAudio = samples
        val params = _state.value.settings.toParams()
        _state.update { it.copy(busy = Busy.Transcribing, segments = emptyList(), transcriptSource = source) }
        val started = System.nanoTime()
        val segments = engine.transcribe(samples, params) { segment ->
            _state.update { it.copy(segments = it.segments + segment) }
        }
        val seconds = "%.1f".format(Locale.ROOT, (System.nanoTime() - started) / 1e9)
        _state.update { it.copy(transcriptSource = "$source: ${segments.size} segments in $seconds s") }
    }

    private fun refreshModels() {
        val entries = models.entries()
        _state.update { it.copy(models = entries) }
    }

    /**
     * Runs [work] on the view model's scope, one job at a time. A user's mistake (a wrong model or audio
     * file, a failed download) ends as the one message on screen; so does anything whisper.cpp reports.
     */
    private fun launchWork(busy: Busy?, work: suspend () -> Unit) {
        if (job?.isActive == true) return
        job = viewModelScope.launch(Dispatchers.IO) {
            _state.update { it.copy(busy = busy, message = null) }
            try {
                work()
            } catch (e: CancellationException) {
                _state.update { it.copy(message = "Cancelled.") }
                throw e
            } catch (e: ModelCheckException) {
                _state.update { it.copy(message = e.message) }
            } catch (e: AudioDecodeException) {
                _state.update { it.copy(message = e.message) }
            } catch (e: TranscriptionException) {
                _state.update { it.copy(message = e.message) }
            } catch (e: IOException) {
                // ModelStoreException (a failed download or size/sha256 check) is one of these.
                _state.update { it.copy(message = e.message ?: e.javaClass.simpleName) }
            } catch (e: IllegalArgumentException) {
                // :core's checks of what the user chose: an unknown language, an English-only model asked
                // for another one, a file name it cannot store.
                _state.update { it.copy(message = e.message) }
            } catch (e: Exception) {
                _state.update { it.copy(message = "${e.javaClass.simpleName}: ${e.message}") }
            } finally {
                _state.update { it.copy(busy = null) }
            }
        }
    }

    private fun readSettings() = Settings(
        language = prefs.getString(KEY_LANGUAGE, null),
        translate = prefs.getBoolean(KEY_TRANSLATE, false),
        threads = prefs.getInt(KEY_THREADS, 0),
        beamSize = prefs.getInt(KEY_BEAM_SIZE, 1),
    )

    private companion object {
        const val KEY_LANGUAGE = "language"
        const val KEY_TRANSLATE = "translate"
        const val KEY_THREADS = "threads"
        const val KEY_BEAM_SIZE = "beam_size"
        const val PROGRESS_STEP = 4L shl 20
    }
}
