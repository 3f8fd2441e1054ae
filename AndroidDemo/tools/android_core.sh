#!/usr/bin/env bash
# Builds AndroidDemo's native layer and :core on this machine and runs :core's JUnit tests against it:
#   1. the Kotlin compiler (npm's kotlin-compiler, pinned by sha256) and JUnit 4 (Debian's junit4);
#   2. whisper.cpp's sources as pinned in whisper-cpp.properties (the registry copy, sha256 checked);
#   3. libwhisper_jni.so for this machine from native/CMakeLists.txt (Release, nice, -j2);
#   4. :core and its tests compiled with kotlinc, and :app's plain-Kotlin parts (AppState.kt, Engine.kt) with
#      their tests (app/src/test) against it;
#   5. the tests, run on this JVM with the host library: :app's, then :core's.
# Reruns reuse what is built: downloads in ANDROID_CORE_CACHE (default ~/.cache/whisper-finetune/android),
# builds in ANDROID_CORE_BUILD (default AndroidDemo/.build).
#
#   AndroidDemo/tools/android_core.sh [--inputs=DIR] [--results=DIR] [--build-only]
#
# --inputs: the models, audio and reference transcripts that tests/test_android_core.py prepares; without it
#           the tests that need them are skipped (with it, a skipped test fails the run).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BUILD="${ANDROID_CORE_BUILD:-$HERE/.build}"
CACHE="${ANDROID_CORE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/whisper-finetune/android}"
KOTLIN_VERSION=2.3.21
KOTLIN_SHA256=9033403723284036dc6915328813639f211f2965e929fb0c8f54c3317a21436b
JUNIT_JARS="${JUNIT_JARS:-/usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

inputs="" results="" build_only=0
for arg in "$@"; do
    case "$arg" in
        --inputs=*) inputs="$(cd "${arg#--inputs=}" && pwd)" ;;
        --results=*) results="${arg#--results=}" ;;
        --build-only) build_only=1 ;;
        *) echo "error: unknown argument $arg (use --inputs=DIR, --results=DIR, --build-only)" >&2; exit 2 ;;
    esac
done

started=$SECONDS
step() { echo "== [$((SECONDS - started))s] $*"; }
fail() { echo "error: $*" >&2; exit 1; }
prop() { sed -n "s/^$1=//p" "$HERE/whisper-cpp.properties" | head -n 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }
# True when $1 is missing or older than any file under the other arguments.
stale() { [ ! -e "$1" ] || [ -n "$(find "${@:2}" -newer "$1" -type f -print -quit)" ]; }

for tool in java javac cmake c++ npm sha256sum; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (see AndroidDemo/README.md, 'Building :core here')"
done
for jar in ${JUNIT_JARS//:/ }; do
    [ -f "$jar" ] || fail "$jar is missing: install Debian's junit4 (apt-get install junit4) or set JUNIT_JARS"
done
export JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")}"
mkdir -p "$BUILD" "$CACHE"

step "Kotlin compiler $KOTLIN_VERSION"
KOTLINC_HOME="$CACHE/kotlinc-$KOTLIN_VERSION"
if [ ! -x "$KOTLINC_HOME/bin/kotlinc" ]; then
    tarball="$CACHE/kotlin-compiler-$KOTLIN_VERSION.tgz"
    if [ ! -f "$tarball" ] || [ "$(sha256 "$tarball")" != "$KOTLIN_SHA256" ]; then
        (cd "$CACHE" && npm pack --silent "kotlin-compiler@$KOTLIN_VERSION" >/dev/null)
    fi
    [ "$(sha256 "$tarball")" = "$KOTLIN_SHA256" ] || fail "$tarball does not have the pinned sha256 $KOTLIN_SHA256"
    rm -rf "$KOTLINC_HOME.tmp" && mkdir -p "$KOTLINC_HOME.tmp"
    tar -xzf "$tarball" -C "$KOTLINC_HOME.tmp" --strip-components=1
    mv "$KOTLINC_HOME.tmp" "$KOTLINC_HOME"
fi
KOTLINC="$KOTLINC_HOME/bin/kotlinc"
STDLIB="$KOTLINC_HOME/lib/kotlin-stdlib.jar"

step "whisper.cpp $(prop whisper.cpp.version) from $(prop whisper.cpp.registry.package) $(prop whisper.cpp.registry.version)"
archive="$("$PYTHON" "$HERE/tools/fetch_sources.py" --dest="$CACHE")"
archive_sha="$(prop whisper.cpp.registry.sha256)"
[ "$(sha256 "$archive")" = "$archive_sha" ] || fail "$archive does not have the pinned sha256 $archive_sha"
SOURCES="$BUILD/src/$archive_sha"
WHISPER_DIR="$SOURCES/$(prop whisper.cpp.registry.dir)"
if [ ! -f "$WHISPER_DIR/include/whisper.h" ]; then
    rm -rf "$SOURCES" && mkdir -p "$SOURCES"
    tar -xzf "$archive" -C "$SOURCES" "$(prop whisper.cpp.registry.dir)"
fi

step "libwhisper_jni for this machine (cmake, Release)"
NATIVE="$BUILD/native"
# GGML_CCACHE=OFF: no ccache here, and its warning would only be noise.
configure=(-DCMAKE_BUILD_TYPE=Release -DWHISPER_CPP_SOURCE_DIR="$WHISPER_DIR" -DGGML_CCACHE=OFF)
case "$(uname -m)" in
    x86_64 | amd64)
        # ggml builds for this CPU (-march=native). On a CPU with AMX (Xeon Sapphire Rapids and later) that brings
        # in ggml's AMX matrix kernels, which crash whisper.cpp 1.8.5 on q8_0 models (SIGSEGV in
        # ggml_backend_amx_mul_mat; llama.cpp issue 20824 reports the same crash). Phones have no AMX, nor has
        # pywhispercpp's wheel (AVX2), so the host build leaves them out.
        no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        configure+=(-DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx") ;;
esac
if [ ! -f "$NATIVE/CMakeCache.txt" ] || [ "$(cat "$NATIVE/configure-args" 2>/dev/null)" != "${configure[*]}" ]; then
    rm -rf "$NATIVE"
    cmake -S "$HERE/native" -B "$NATIVE" "${configure[@]}" >"$BUILD/cmake-configure.log" 2>&1 \
        || { cat "$BUILD/cmake-configure.log"; exit 1; }
    echo "${configure[*]}" >"$NATIVE/configure-args"
fi
nice cmake --build "$NATIVE" --target whisper_jni -j2 >"$BUILD/cmake-build.log" 2>&1 \
    || { tail -n 40 "$BUILD/cmake-build.log"; exit 1; }
[ -f "$NATIVE/libwhisper_jni.so" ] || fail "the build made no $NATIVE/libwhisper_jni.so"

step ":core (kotlinc)"
MAIN_JAR="$BUILD/core/core.jar"
TEST_JAR="$BUILD/core/core-tests.jar"
mkdir -p "$BUILD/core"
if stale "$MAIN_JAR" "$HERE/core/src/main"; then
    nice "$KOTLINC" -jvm-target 17 -Werror -module-name core -d "$MAIN_JAR" "$HERE/core/src/main/kotlin"
fi
if stale "$TEST_JAR" "$HERE/core/src/test" "$MAIN_JAR"; then
    # The tests see :core's internal members, as Gradle's test source set does.
    nice "$KOTLINC" -jvm-target 17 -Werror -module-name core -Xfriend-paths="$MAIN_JAR" -cp "$MAIN_JAR:$JUNIT_JARS" \
        -d "$TEST_JAR" "$HERE/core/src/test/kotlin"
fi

step ":app's plain-Kotlin parts and their tests (kotlinc, against :core)"
APP_SOURCES="$HERE/app/src/main/java/org/whisperfinetune/android"
APP_JAR="$BUILD/app/app-tests.jar"
mkdir -p "$BUILD/app"
# Only the files without android.* imports; the rest of :app needs the Android SDK.
if stale "$APP_JAR" "$APP_SOURCES/AppState.kt" "$APP_SOURCES/Engine.kt" "$HERE/app/src/test" "$MAIN_JAR"; then
    nice "$KOTLINC" -jvm-target 17 -Werror -module-name app -cp "$MAIN_JAR:$JUNIT_JARS" -d "$APP_JAR" \
        "$APP_SOURCES/AppState.kt" "$APP_SOURCES/Engine.kt" "$HERE/app/src/test/java"
fi
[ "$build_only" = 1 ] && { step "built"; exit 0; }

core_args=() app_args=()
properties=(-Djava.library.path="$NATIVE")
if [ -n "$inputs" ]; then
    core_args+=(--require-inputs)
    app_args+=(--require-inputs)
    properties+=(-Dwhisper.test.inputs="$inputs")
fi
if [ -n "$results" ]; then
    mkdir -p "$results"
    core_args+=(--report="$results/junit.tsv")
    app_args+=(--report="$results/junit-app.tsv")
    properties+=(-Dwhisper.test.results="$results")
fi
status=0
step "JUnit tests of :app's plain-Kotlin parts"
java -ea -cp "$APP_JAR:$MAIN_JAR:$TEST_JAR:$STDLIB:$JUNIT_JARS" org.whisperfinetune.core.RunTests "${app_args[@]}" \
    org.whisperfinetune.android.AppStateTest || status=$?
step "JUnit tests of :core"
java -ea "${properties[@]}" -cp "$MAIN_JAR:$TEST_JAR:$STDLIB:$JUNIT_JARS" org.whisperfinetune.core.RunTests \
    "${core_args[@]}" || status=$?
step "done"
exit $status
