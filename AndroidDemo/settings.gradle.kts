pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "WhisperFinetuneAndroid"

// :core is plain Kotlin/JVM (no android.* import): built and tested on any JVM, including the project's
// Linux machines. :app is the thin Android layer on top of it.
include(":core", ":app")
