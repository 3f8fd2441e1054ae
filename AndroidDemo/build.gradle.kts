// The plugins of both modules, with their versions from gradle/libs.versions.toml; each module applies its own.
plugins {
    alias(libs.plugins.android.application) apply false
    alias(libs.plugins.kotlin.jvm) apply false
    alias(libs.plugins.kotlin.compose) apply false
}
