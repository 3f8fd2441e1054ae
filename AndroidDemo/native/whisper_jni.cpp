// The JNI side of org.whisperfinetune.core.WhisperNative: load, transcribe (segments streamed into a
// Kotlin callback, stoppable through whisper.cpp's abort callback), language detection, system info, free.
//
// Rules kept here so that a mistake is an exception in Kotlin, never a crash of the process:
//  - every call into whisper.cpp that can throw a C++ exception is wrapped;
//  - text from whisper.cpp goes to Kotlin as bytes (a segment may end inside a UTF-8 sequence, which
//    NewStringUTF would reject), and Kotlin decodes it;
//  - the abort flag is an atomic read by whatever thread ggml computes on; Java is only called back from
//    the thread that called transcribe (whisper_full delivers new segments on the calling thread).
// The model file is checked by Kotlin's ModelCheck before it reaches whisper_init_from_file_with_params.
#include <jni.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "whisper.h"

#ifdef __ANDROID__
#include <android/log.h>
#else
#include <cstdio>
#include <cstdlib>
#endif

namespace {

// One loaded model, the flag that cancel() raises, and the measurements of its last transcription.
struct Session {
    whisper_context *ctx = nullptr;
    std::atomic<bool> abort{false};
    int encoder_runs = 0;
    double wall_ms = 0.0;
};

// whisper.cpp says why a load failed only in its log. Its first error line since the call began is the cause
// (later ones say "failed to load model"): keep it, per thread, for Kotlin.
thread_local std::string first_error;

bool verbose_log() {
#ifdef __ANDROID__
    return false;
#else
    static const bool verbose = std::getenv("WHISPER_JNI_VERBOSE") != nullptr;
    return verbose;
#endif
}

void on_log(ggml_log_level level, const char *text, void *) {
    if (text == nullptr) {
        return;
    }
    if (level == GGML_LOG_LEVEL_ERROR && first_error.empty()) {
        std::string line(text);
        while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) {
            line.pop_back();
        }
        // "whisper_model_load: invalid model data (bad magic)" -> "invalid model data (bad magic)"
        const size_t colon = line.find(": ");
        first_error = colon == std::string::npos ? line : line.substr(colon + 2);
    }
#ifdef __ANDROID__
    if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN) {
        __android_log_write(level == GGML_LOG_LEVEL_ERROR ? ANDROID_LOG_ERROR : ANDROID_LOG_WARN,
                            "whisper.cpp", text);
    }
#else
    if (verbose_log()) {
        std::fputs(text, stderr);
    }
#endif
}

Session *session_of(jlong handle) { return reinterpret_cast<Session *>(handle); }

jbyteArray to_bytes(JNIEnv *env, const char *text) {
    const jsize length = text == nullptr ? 0 : static_cast<jsize>(std::strlen(text));
    jbyteArray bytes = env->NewByteArray(length);
    if (bytes != nullptr && length > 0) {
        env->SetByteArrayRegion(bytes, 0, length, reinterpret_cast<const jbyte *>(text));
    }
    return bytes;
}

std::string from_bytes(JNIEnv *env, jbyteArray bytes) {
    const jsize length = env->GetArrayLength(bytes);
    std::string text(static_cast<size_t>(length), '\0');
    env->GetByteArrayRegion(bytes, 0, length, reinterpret_cast<jbyte *>(&text[0]));
    return text;
}

// What the segment callback needs: the Kotlin sink and whether it has thrown.
struct SegmentSink {
    JNIEnv *env;
    jobject sink;
    jmethodID on_segment;
    std::atomic<bool> *abort;
    bool failed = false;
};

void on_new_segment(whisper_context *, whisper_state *state, int n_new, void *user_data) {
    auto *sink = static_cast<SegmentSink *>(user_data);
    if (sink->failed) {
        return;
    }
    JNIEnv *env = sink->env;
    const int total = whisper_full_n_segments_from_state(state);
    for (int i = total - n_new; i < total; ++i) {
        jbyteArray text = to_bytes(env, whisper_full_get_segment_text_from_state(state, i));
        if (text == nullptr) {   // OutOfMemoryError is pending
            sink->failed = true;
        } else {
            env->CallVoidMethod(sink->sink, sink->on_segment,
                                static_cast<jlong>(whisper_full_get_segment_t0_from_state(state, i)),
                                static_cast<jlong>(whisper_full_get_segment_t1_from_state(state, i)), text);
            env->DeleteLocalRef(text);
            sink->failed = env->ExceptionCheck() == JNI_TRUE;
        }
        if (sink->failed) {
            // The exception stays pending and is thrown in Kotlin when transcribe returns; stop the work.
            sink->abort->store(true);
            return;
        }
    }
}

bool should_abort(void *user_data) { return static_cast<std::atomic<bool> *>(user_data)->load(); }

bool on_encoder_begin(whisper_context *, whisper_state *, void *user_data) {
    auto *session = static_cast<Session *>(user_data);
    session->encoder_runs += 1;
    return !session->abort.load();
}

}  // namespace

extern "C" {

JNIEXPORT jint JNICALL JNI_OnLoad(JavaVM *, void *) {
    whisper_log_set(on_log, nullptr);
    return JNI_VERSION_1_6;
}

JNIEXPORT jlong JNICALL Java_org_whisperfinetune_core_WhisperNative_load(JNIEnv *env, jclass, jbyteArray path) {
    const std::string file = from_bytes(env, path);
    first_error.clear();
    whisper_context *ctx = nullptr;
    try {
        ctx = whisper_init_from_file_with_params(file.c_str(), whisper_context_default_params());
    } catch (const std::exception &error) {
        first_error = error.what();
    } catch (...) {
        first_error = "unexpected C++ exception";
    }
    if (ctx == nullptr) {
        return 0;
    }
    auto *session = new Session();
    session->ctx = ctx;
    return reinterpret_cast<jlong>(session);
}

JNIEXPORT jbyteArray JNICALL Java_org_whisperfinetune_core_WhisperNative_lastError(JNIEnv *env, jclass) {
    return to_bytes(env, first_error.c_str());
}

JNIEXPORT void JNICALL Java_org_whisperfinetune_core_WhisperNative_free(JNIEnv *, jclass, jlong handle) {
    Session *session = session_of(handle);
    if (session != nullptr) {
        whisper_free(session->ctx);
        delete session;
    }
}

JNIEXPORT void JNICALL Java_org_whisperfinetune_core_WhisperNative_cancel(JNIEnv *, jclass, jlong handle) {
    session_of(handle)->abort.store(true);
}

JNIEXPORT jint JNICALL Java_org_whisperfinetune_core_WhisperNative_transcribe(
        JNIEnv *env, jclass, jlong handle, jfloatArray samples, jstring language, jboolean translate,
        jint threads, jint beam_size, jobject sink) {
    Session *session = session_of(handle);
    const char *language_chars = language == nullptr ? nullptr : env->GetStringUTFChars(language, nullptr);
    const std::string language_code = language_chars == nullptr ? "auto" : language_chars;
    if (language_chars != nullptr) {
        env->ReleaseStringUTFChars(language, language_chars);
    }
    jclass sink_class = env->GetObjectClass(sink);
    SegmentSink segment_sink{env, sink, env->GetMethodID(sink_class, "onSegment", "(JJ[B)V"), &session->abort};
    env->DeleteLocalRef(sink_class);
    if (segment_sink.on_segment == nullptr) {
        return -1;   // NoSuchMethodError is pending
    }

    whisper_full_params params = whisper_full_default_params(
            beam_size > 1 ? WHISPER_SAMPLING_BEAM_SEARCH : WHISPER_SAMPLING_GREEDY);
    params.n_threads = threads;
    params.translate = translate == JNI_TRUE;
    params.language = language_code.c_str();
    params.print_progress = false;
    params.print_realtime = false;
    params.print_timestamps = false;
    if (beam_size > 1) {
        params.beam_search.beam_size = beam_size;
    }
    params.new_segment_callback = on_new_segment;
    params.new_segment_callback_user_data = &segment_sink;
    params.abort_callback = should_abort;
    params.abort_callback_user_data = &session->abort;
    params.encoder_begin_callback = on_encoder_begin;
    params.encoder_begin_callback_user_data = session;

    const jsize n_samples = env->GetArrayLength(samples);
    jfloat *data = env->GetFloatArrayElements(samples, nullptr);
    if (data == nullptr) {
        return -1;   // OutOfMemoryError is pending
    }
    session->encoder_runs = 0;
    first_error.clear();
    whisper_reset_timings(session->ctx);
    const auto started = std::chrono::steady_clock::now();
    int result;
    try {
        result = whisper_full(session->ctx, params, data, n_samples);
    } catch (const std::exception &error) {
        first_error = error.what();
        result = -1000;
    } catch (...) {
        first_error = "unexpected C++ exception";
        result = -1000;
    }
    session->wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    env->ReleaseFloatArrayElements(samples, data, JNI_ABORT);
    return result;
}

// Clears the abort flag before a transcription; returns whether cancel() had raised it.
JNIEXPORT jboolean JNICALL Java_org_whisperfinetune_core_WhisperNative_takeAbort(JNIEnv *, jclass, jlong handle) {
    return session_of(handle)->abort.exchange(false) ? JNI_TRUE : JNI_FALSE;
}

// [wall ms of whisper_full, encoder runs, encode ms per run, sample, decode, batched decode, prompt ms per run]
JNIEXPORT jdoubleArray JNICALL Java_org_whisperfinetune_core_WhisperNative_lastRunTimings(
        JNIEnv *env, jclass, jlong handle) {
    Session *session = session_of(handle);
    whisper_timings *timings = whisper_get_timings(session->ctx);
    if (timings == nullptr) {
        return nullptr;
    }
    const jdouble values[7] = {session->wall_ms, static_cast<jdouble>(session->encoder_runs), timings->encode_ms,
                               timings->sample_ms, timings->decode_ms, timings->batchd_ms, timings->prompt_ms};
    delete timings;
    jdoubleArray out = env->NewDoubleArray(7);
    if (out != nullptr) {
        env->SetDoubleArrayRegion(out, 0, 7, values);
    }
    return out;
}

// Probabilities of every language (index = whisper.cpp's language id) for the first 30 s; null on failure.
JNIEXPORT jfloatArray JNICALL Java_org_whisperfinetune_core_WhisperNative_detectLanguage(
        JNIEnv *env, jclass, jlong handle, jfloatArray samples, jint threads) {
    Session *session = session_of(handle);
    const jsize n_samples = env->GetArrayLength(samples);
    jfloat *data = env->GetFloatArrayElements(samples, nullptr);
    if (data == nullptr) {
        return nullptr;
    }
    std::vector<float> probabilities(static_cast<size_t>(whisper_lang_max_id() + 1), 0.0f);
    int language = -1;
    first_error.clear();
    try {
        if (whisper_pcm_to_mel(session->ctx, data, n_samples, threads) == 0) {
            language = whisper_lang_auto_detect(session->ctx, 0, threads, probabilities.data());
        }
    } catch (const std::exception &error) {
        first_error = error.what();
    } catch (...) {
        first_error = "unexpected C++ exception";
    }
    env->ReleaseFloatArrayElements(samples, data, JNI_ABORT);
    if (language < 0) {
        return nullptr;
    }
    jfloatArray out = env->NewFloatArray(static_cast<jsize>(probabilities.size()));
    if (out != nullptr) {
        env->SetFloatArrayRegion(out, 0, static_cast<jsize>(probabilities.size()), probabilities.data());
    }
    return out;
}

JNIEXPORT jboolean JNICALL Java_org_whisperfinetune_core_WhisperNative_isMultilingual(JNIEnv *, jclass, jlong handle) {
    return whisper_is_multilingual(session_of(handle)->ctx) != 0 ? JNI_TRUE : JNI_FALSE;
}

JNIEXPORT jint JNICALL Java_org_whisperfinetune_core_WhisperNative_languageMaxId(JNIEnv *, jclass) {
    return whisper_lang_max_id();
}

JNIEXPORT jstring JNICALL Java_org_whisperfinetune_core_WhisperNative_languageCode(JNIEnv *env, jclass, jint id) {
    const char *code = whisper_lang_str(id);
    return code == nullptr ? nullptr : env->NewStringUTF(code);
}

JNIEXPORT jstring JNICALL Java_org_whisperfinetune_core_WhisperNative_systemInfo(JNIEnv *env, jclass) {
    return env->NewStringUTF(whisper_print_system_info());
}

JNIEXPORT jstring JNICALL Java_org_whisperfinetune_core_WhisperNative_version(JNIEnv *env, jclass) {
    return env->NewStringUTF(whisper_version());
}

}  // extern "C"
