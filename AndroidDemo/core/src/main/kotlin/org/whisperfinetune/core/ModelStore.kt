package org.whisperfinetune.core

import java.io.File
import java.io.IOException
import java.io.InputStream
import java.net.HttpURLConnection
import java.net.URL
import java.nio.file.AtomicMoveNotSupportedException
import java.nio.file.Files
import java.nio.file.StandardCopyOption
import java.security.MessageDigest
import java.util.Locale
import java.util.concurrent.CancellationException

/**
 * The models folder: a download or import is written to `<name>.part` and becomes `<name>` only when it is
 * complete, its size and sha256 match what was expected, and ModelCheck accepts it. [list] shows finished models.
 */
class ModelStore(val dir: File) {
    fun partFile(name: String): File = File(dir, checkedName(name) + PART)

    fun file(name: String): File = File(dir, checkedName(name))

    /** Verifies `<name>.part` and renames it to `<name>`; ModelStoreException or ModelCheckException if it fails. */
    fun finish(name: String, expectedSize: Long?, expectedSha256: String?): File {
        val part = partFile(name)
        if (!part.isFile) throw ModelStoreException("$name: nothing was downloaded or imported (no ${part.name})")
        val size = part.length()
        if (expectedSize != null && size < expectedSize) {
            throw ModelStoreException("$name is incomplete: $size of $expectedSize bytes arrived; download it again " +
                "to resume")
        }
        if (expectedSize != null && size > expectedSize) {
            part.delete()
            throw ModelStoreException("$name is $size bytes, more than the expected $expectedSize; it was discarded")
        }
        if (expectedSha256 != null) {
            val actual = sha256(part)
            if (!actual.equals(expectedSha256.trim(), ignoreCase = true)) {
                part.delete()
                throw ModelStoreException("$name does not match its sha256 (got $actual); it was discarded")
            }
        }
        try {
            ModelCheck.inspect(part)
        } catch (error: ModelCheckException) {
            part.delete()
            throw ModelCheckException(error.message!!.replace(part.name, name))
        }
        val target = file(name)
        try {
            Files.move(part.toPath(), target.toPath(), StandardCopyOption.ATOMIC_MOVE,
                StandardCopyOption.REPLACE_EXISTING)
        } catch (error: AtomicMoveNotSupportedException) {
            Files.move(part.toPath(), target.toPath(), StandardCopyOption.REPLACE_EXISTING)
        }
        return target
    }

    /** Finished models, by name. */
    fun list(): List<File> =
        (dir.listFiles() ?: emptyArray()).filter { it.isFile && !it.name.endsWith(PART) && !it.name.startsWith(".") }
            .sortedBy { it.name }

    fun delete(name: String): Boolean = file(name).delete().also { partFile(name).delete() }

    /** Copies [input] (a file picked by the user) into the store through `<name>.part`, then [finish]es it. */
    fun import(name: String, input: InputStream, expectedSize: Long? = null, expectedSha256: String? = null,
               onProgress: (Long) -> Unit = {}): File {
        ensureDir()
        val part = partFile(name)
        part.outputStream().use { out -> copy(input, out, 0L, onProgress) { false } }
        return finish(name, expectedSize, expectedSha256)
    }

    /**
     * Downloads [url] into `<name>.part`, resuming a partial file when the server allows it, then [finish]es it.
     * Without [expectedSize], the size the server announced (Content-Length) is the one checked, so a connection
     * that closes early leaves an incomplete `.part` to resume instead of a file that only the model check refuses.
     * [onProgress] gets (bytes so far, total or null); [isCancelled] is polled between reads.
     */
    fun download(url: URL, name: String, expectedSize: Long? = null, expectedSha256: String? = null,
                 onProgress: (Long, Long?) -> Unit = { _, _ -> }, isCancelled: () -> Boolean = { false }): File {
        ensureDir()
        val part = partFile(name)
        val have = if (part.isFile) part.length() else 0L
        var announced: Long? = null
        val connection = url.openConnection() as? HttpURLConnection
            ?: throw ModelStoreException("$url is not an http(s) address")
        try {
            connection.connectTimeout = 15_000
            connection.readTimeout = 30_000
            if (have > 0) connection.setRequestProperty("Range", "bytes=$have-")
            val status = connection.responseCode
            val resumed = status == HttpURLConnection.HTTP_PARTIAL && have > 0
            if (status != HttpURLConnection.HTTP_OK && !resumed) {
                throw ModelStoreException("$url answered HTTP $status ${connection.responseMessage ?: ""}".trim())
            }
            val start = if (resumed) have else 0L
            val length = connection.contentLengthLong.takeIf { it >= 0 }
            announced = length?.let { it + start }
            val total = announced ?: expectedSize
            java.io.FileOutputStream(part, resumed).use { out ->
                connection.inputStream.use { input ->
                    copy(input, out, start, { onProgress(it, total) }, isCancelled)
                }
            }
        } catch (error: CancellationException) {
            throw error
        } catch (error: ModelStoreException) {
            throw error
        } catch (error: IOException) {
            throw ModelStoreException("downloading $name stopped: ${error.message}; try again to resume")
        } finally {
            connection.disconnect()
        }
        return finish(name, expectedSize ?: announced, expectedSha256)
    }

    private fun ensureDir() {
        if (!dir.isDirectory && !dir.mkdirs()) throw ModelStoreException("cannot create the models folder $dir")
    }

    private fun copy(input: InputStream, out: java.io.OutputStream, start: Long, onProgress: (Long) -> Unit,
                     isCancelled: () -> Boolean) {
        val buffer = ByteArray(1 shl 16)
        var done = start
        while (true) {
            if (isCancelled()) throw CancellationException("download cancelled")
            val n = input.read(buffer)
            if (n < 0) break
            out.write(buffer, 0, n)
            done += n
            onProgress(done)
        }
    }

    companion object {
        const val PART = ".part"

        fun sha256(file: File): String {
            val digest = MessageDigest.getInstance("SHA-256")
            file.inputStream().use { input ->
                val buffer = ByteArray(1 shl 16)
                while (true) {
                    val n = input.read(buffer)
                    if (n < 0) break
                    digest.update(buffer, 0, n)
                }
            }
            return digest.digest().joinToString("") { String.format(Locale.ROOT, "%02x", it) }
        }

        private fun checkedName(name: String): String {
            require(name.isNotBlank() && name != "." && name != ".." && '/' !in name && '\\' !in name &&
                !name.endsWith(PART) && !name.startsWith(".")) {
                "'$name' is not a model file name (no folders, no leading dot, not ending in $PART)"
            }
            return name
        }
    }
}
