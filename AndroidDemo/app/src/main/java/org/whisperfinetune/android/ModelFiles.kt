package org.whisperfinetune.android

import android.content.Context
import android.net.Uri
import android.provider.OpenableColumns
import java.io.File
import java.io.IOException
import java.net.URL
import kotlinx.coroutines.Job
import kotlinx.coroutines.currentCoroutineContext
import org.whisperfinetune.core.ModelStore

/**
 * Where models come from: bundled assets (app/src/main/assets/models/), a document the user picks, or a URL.
 * :core's ModelStore does the bookkeeping: each arrives as a `.part` file and gets its name only once its size,
 * its sha256 (when given) and the GGML model check pass, so a wrong file never reaches native code.
 */
class ModelFiles(private val context: Context) {
    private val store = ModelStore(File(context.filesDir, "models"))

    fun entries(): List<ModelEntry> {
        val stored = store.list().associateBy { it.name }
        val bundled = bundledNames().map { ModelEntry(it, bundled = true, file = stored[it], sizeBytes = assetSize(it)) }
        val others = stored.values.filter { file -> bundled.none { it.name == file.name } }
            .map { ModelEntry(it.name, bundled = false, file = it, sizeBytes = it.length()) }
        return (bundled + others).sortedBy { it.name }
    }

    /** The model's file in app storage; a bundled one is copied out of the APK first (native code needs a path). */
    fun fileFor(entry: ModelEntry): File =
        if (entry.bundled) bundled(entry.name) else entry.file ?: throw IOException("${entry.name} is gone.")

    /** Copies a picked document into app storage under its own name. */
    fun import(uri: Uri): File {
        var displayName: String? = null
        var size: Long? = null
        context.contentResolver.query(uri, arrayOf(OpenableColumns.DISPLAY_NAME, OpenableColumns.SIZE), null, null, null)
            ?.use { cursor ->
                if (cursor.moveToFirst()) {
                    if (!cursor.isNull(0)) displayName = cursor.getString(0)
                    if (!cursor.isNull(1)) size = cursor.getLong(1)
                }
            }
        val name = storageName(displayName)
        val input = context.contentResolver.openInputStream(uri) ?: throw IOException("$name cannot be opened.")
        return input.use { store.import(name, it, expectedSize = size) }
    }

    /**
     * Downloads [url] (resuming what an interrupted download left), checked against [sha256] when it is not
     * blank. [onProgress] gets bytes done and the total, when the server says it. Cancelling the coroutine
     * stops the download.
     */
    suspend fun download(url: String, sha256: String, onProgress: (Long, Long?) -> Unit): File {
        val job = currentCoroutineContext()[Job]
        val address = URL(url)
        return store.download(
            address, storageName(address.path),
            expectedSha256 = sha256.trim().ifEmpty { null },
            onProgress = onProgress,
            isCancelled = { job?.isActive == false },
        )
    }

    fun delete(entry: ModelEntry) {
        store.delete(entry.name)
    }

    private fun bundled(name: String): File {
        val size = assetSize(name) ?: throw IOException("$name is not in the APK's $ASSET_DIR/ folder.")
        // A copy of another size is from an older APK: replace it.
        store.list().firstOrNull { it.name == name && it.length() == size }?.let { return it }
        return context.assets.open("$ASSET_DIR/$name").use { store.import(name, it, expectedSize = size) }
    }

    /** Known because bundled models are stored uncompressed (noCompress in app/build.gradle.kts). */
    private fun assetSize(name: String): Long? =
        runCatching { context.assets.openFd("$ASSET_DIR/$name").use { it.length } }.getOrNull()

    private fun bundledNames(): List<String> =
        context.assets.list(ASSET_DIR).orEmpty().filter { it.endsWith(".bin") }

    private companion object {
        const val ASSET_DIR = "models"
    }
}
