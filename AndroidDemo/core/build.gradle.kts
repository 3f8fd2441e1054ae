import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// :core is plain Kotlin/JVM (no android.* import), so it builds and is tested on any JVM. Where Gradle cannot
// run (no Maven repository reachable), tools/android_core.sh builds and tests the same sources with kotlinc.
plugins {
    alias(libs.plugins.kotlin.jvm)
}

java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    testImplementation(libs.junit)
}

// WhisperContextTest needs libwhisper_jni for this computer (tools/android_core.sh --build-only puts it in
// ../.build/native) and, for the model tests, the inputs that tests/test_android_core.py prepares
// (-Pwhisper.test.inputs=DIR). Without them those tests are skipped, not failed.
tasks.test {
    systemProperty("java.library.path", rootProject.file(".build/native").absolutePath)
    for (key in listOf("whisper.test.inputs", "whisper.test.results")) {
        providers.gradleProperty(key).orNull?.let { systemProperty(key, it) }
    }
}
