import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// AGP 9 compiles Kotlin itself ("built-in Kotlin"): no org.jetbrains.kotlin.android plugin here.
plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.compose)
}

// whisper.cpp is never copied into this repository. ../native/CMakeLists.txt downloads the release pinned in
// ../whisper-cpp.properties (version, URL and sha256: the one place that names it) when CMake configures,
// checks it and builds it next to our JNI layer. Android Studio configures CMake during a sync too, so the
// sources are there before the first build.

android {
    namespace = "org.whisperfinetune.android"
    compileSdk { version = release(libs.versions.compileSdk.get().toInt()) }
    ndkVersion = libs.versions.ndk.get()

    defaultConfig {
        applicationId = "org.whisperfinetune.android"
        minSdk = libs.versions.minSdk.get().toInt()
        targetSdk = libs.versions.targetSdk.get().toInt()
        versionCode = 1
        versionName = "1.0"

        ndk { abiFilters += listOf("arm64-v8a", "x86_64") }
        externalNativeBuild {
            cmake {
                arguments += listOf(
                    // whisper.cpp's ARM recommendation: ARMv8.2-A with dot-product and fp16 arithmetic
                    // (every 64-bit phone core since Cortex-A55/A75). ggml applies it to arm64-v8a only.
                    "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16",
                    // ggml's own thread pool; OpenMP would need libomp.so packaged beside our library.
                    "-DGGML_OPENMP=OFF",
                )
            }
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = true
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
            // A demo: signed with the debug key so that `assembleRelease` gives an installable APK.
            // Publishing needs a signing config of your own.
            signingConfig = signingConfigs.getByName("debug")
            externalNativeBuild {
                cmake {
                    // AGP's default for release is RelWithDebInfo (-O2); whisper.cpp wants -O3.
                    arguments += "-DCMAKE_BUILD_TYPE=Release"
                    cFlags += "-O3"
                    cppFlags += "-O3"
                }
            }
        }
    }

    externalNativeBuild {
        cmake {
            path = file("../native/CMakeLists.txt")
            version = libs.versions.cmake.get()
        }
    }

    // Bundled models are copied out of the APK once; stored uncompressed, the copy is a plain read.
    androidResources { noCompress += "bin" }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    buildFeatures { compose = true }
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    implementation(project(":core"))

    implementation(platform(libs.compose.bom))
    implementation(libs.compose.ui)
    implementation(libs.compose.material3)
    implementation(libs.androidx.activity.compose)
    implementation(libs.androidx.lifecycle.viewmodel.compose)
    implementation(libs.androidx.lifecycle.runtime.compose)
    implementation(libs.kotlinx.coroutines.android)

    testImplementation(libs.junit)
}
