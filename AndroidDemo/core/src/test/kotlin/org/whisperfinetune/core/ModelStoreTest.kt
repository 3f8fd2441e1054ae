package org.whisperfinetune.core

import com.sun.net.httpserver.HttpServer
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Before
import org.junit.Rule
import org.junit.Test
import org.junit.rules.TemporaryFolder
import java.io.File
import java.net.InetAddress
import java.net.InetSocketAddress
import java.net.URL
import java.util.concurrent.CancellationException

class ModelStoreTest {
    companion object {
        const val SHORT_BODY = 3000
    }

    @get:Rule
    val temp = TemporaryFolder()

    private lateinit var model: ByteArray
    private lateinit var store: ModelStore
    private var server: HttpServer? = null
    private val ranges = ArrayList<String?>()

    @Before
    fun setUp() {
        model = TinyGgml().write(temp.newFile("source.bin")).readBytes()
        store = ModelStore(File(temp.root, "models"))
    }

    @After
    fun tearDown() {
        server?.stop(0)
    }

    private fun sha(bytes: ByteArray) = ModelStore.sha256(temp.newFile().also { it.writeBytes(bytes) })

    /** Serves [model] on the loopback interface, honouring Range requests like a file server does. */
    private fun serve(): URL {
        val http = HttpServer.create(InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0)
        http.createContext("/ggml-tiny.bin") { exchange ->
            val range = exchange.requestHeaders.getFirst("Range")
            ranges.add(range)
            val start = range?.removePrefix("bytes=")?.removeSuffix("-")?.toInt() ?: 0
            val body = model.copyOfRange(start, model.size)
            if (start > 0) exchange.responseHeaders.add("Content-Range", "bytes $start-${model.size - 1}/${model.size}")
            exchange.sendResponseHeaders(if (start > 0) 206 else 200, body.size.toLong())
            exchange.responseBody.use { it.write(body) }
        }
        // A server (or proxy) that announces the whole file but closes the connection after [SHORT_BODY] bytes.
        // HttpURLConnection reports that as a normal end of the body, not as an error.
        http.createContext("/cut/ggml-tiny.bin") { exchange ->
            ranges.add(exchange.requestHeaders.getFirst("Range"))
            exchange.sendResponseHeaders(200, model.size.toLong())
            exchange.responseBody.write(model, 0, SHORT_BODY)
            exchange.responseBody.flush()
            exchange.close()
        }
        http.createContext("/missing") { exchange -> exchange.sendResponseHeaders(404, -1); exchange.close() }
        http.start()
        server = http
        return URL("http://127.0.0.1:${http.address.port}/ggml-tiny.bin")
    }

    @Test
    fun finishRenamesACheckedPartFile() {
        store.dir.mkdirs()
        store.partFile("tiny.bin").writeBytes(model)
        assertEquals("tiny.bin.part", store.partFile("tiny.bin").name)
        assertEquals(emptyList<File>(), store.list())
        val done = store.finish("tiny.bin", model.size.toLong(), sha(model).uppercase())
        assertEquals(File(store.dir, "tiny.bin"), done)
        assertFalse(store.partFile("tiny.bin").exists())
        assertEquals(listOf(done), store.list())
        assertTrue(done.readBytes().contentEquals(model))
    }

    @Test
    fun anIncompletePartIsKeptForResuming() {
        store.dir.mkdirs()
        store.partFile("tiny.bin").writeBytes(model.copyOf(1000))
        try {
            store.finish("tiny.bin", model.size.toLong(), null)
            fail("finished an incomplete download")
        } catch (error: ModelStoreException) {
            assertEquals("tiny.bin is incomplete: 1000 of ${model.size} bytes arrived; download it again to resume",
                error.message)
        }
        assertTrue(store.partFile("tiny.bin").exists())
        assertEquals(emptyList<File>(), store.list())
    }

    @Test
    fun aWrongChecksumOrANonModelIsDiscarded() {
        store.dir.mkdirs()
        store.partFile("tiny.bin").writeBytes(model)
        try {
            store.finish("tiny.bin", null, "0".repeat(64))
            fail("finished a file with the wrong sha256")
        } catch (error: ModelStoreException) {
            assertEquals("tiny.bin does not match its sha256 (got ${sha(model)}); it was discarded", error.message)
        }
        assertFalse(store.partFile("tiny.bin").exists())
        store.partFile("page.bin").writeText("<html>Not found</html>" + " ".repeat(100))
        try {
            store.finish("page.bin", null, null)
            fail("finished an HTML page as a model")
        } catch (error: ModelCheckException) {
            assertEquals("page.bin is a text file (JSON or HTML?), not a GGML model; make one with convert-ggml.py",
                error.message)
        }
        assertEquals(emptyList<File>(), store.list())
    }

    @Test
    fun importCopiesAStreamThroughThePartFile() {
        var progress = 0L
        val done = store.import("picked.bin", model.inputStream(), model.size.toLong(), sha(model)) { progress = it }
        assertEquals(model.size.toLong(), progress)
        assertEquals(listOf(done), store.list())
    }

    @Test
    fun downloadResumesAPartialFileAndVerifiesIt() {
        val url = serve()
        store.dir.mkdirs()
        store.partFile("tiny.bin").writeBytes(model.copyOf(5000))
        var last = 0L to null as Long?
        val done = store.download(url, "tiny.bin", model.size.toLong(), sha(model), onProgress = { n, total ->
            last = n to total
        })
        assertEquals(listOf("bytes=5000-"), ranges)
        assertEquals(model.size.toLong() to model.size.toLong(), last)
        assertTrue(done.readBytes().contentEquals(model))
    }

    @Test
    fun downloadReportsHttpErrorsAndCancels() {
        val url = serve()
        try {
            store.download(URL(url, "/missing"), "tiny.bin")
            fail("downloaded a 404")
        } catch (error: ModelStoreException) {
            assertTrue(error.message!!, error.message!!.contains("answered HTTP 404"))
        }
        try {
            store.download(url, "tiny.bin", isCancelled = { true })
            fail("a cancelled download finished")
        } catch (error: CancellationException) {
            assertEquals(emptyList<File>(), store.list())
        }
    }

    @Test
    fun aDownloadCutShortIsIncompleteByTheServersLength() {
        val url = serve()
        try {
            store.download(URL(url, "/cut/ggml-tiny.bin"), "tiny.bin")
            fail("finished a download cut short")
        } catch (error: ModelStoreException) {
            assertEquals("tiny.bin is incomplete: $SHORT_BODY of ${model.size} bytes arrived; download it again " +
                "to resume", error.message)
        }
        assertEquals(SHORT_BODY.toLong(), store.partFile("tiny.bin").length())
        assertEquals(emptyList<File>(), store.list())
        // Without an expected size the next try resumes too, and finishes at the server's length.
        val done = store.download(url, "tiny.bin")
        assertEquals(listOf(null, "bytes=$SHORT_BODY-"), ranges)
        assertTrue(done.readBytes().contentEquals(model))
    }

    @Test(expected = IllegalArgumentException::class)
    fun refusesNamesWithFolders() {
        store.partFile("../escape.bin")
    }
}
