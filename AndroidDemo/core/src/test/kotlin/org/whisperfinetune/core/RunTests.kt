package org.whisperfinetune.core

import org.junit.runner.Description
import org.junit.runner.JUnitCore
import org.junit.runner.notification.Failure
import org.junit.runner.notification.RunListener
import java.io.File
import kotlin.system.exitProcess

/**
 * Runs the JUnit tests of :core and prints one line per test plus "N passed, N failed, N skipped".
 * Class names given as arguments are run instead (tools/android_core.sh runs :app's plain-Kotlin tests so).
 * With --require-inputs a skipped test fails the run (the pytest run always gives the inputs).
 * With --report=FILE each test's status is written there as "class.method<TAB>status<TAB>message" lines.
 */
object RunTests {
    private val coreClasses = listOf(
        TimestampsTest::class.java, ResamplerTest::class.java, WavDecoderTest::class.java,
        ModelCheckTest::class.java, ModelStoreTest::class.java, BenchmarkTest::class.java,
        WhisperContextTest::class.java,
    )

    @JvmStatic
    fun main(args: Array<String>) {
        val requireInputs = "--require-inputs" in args
        val report = args.firstOrNull { it.startsWith("--report=") }?.removePrefix("--report=")?.let(::File)
        val named = args.filterNot { it.startsWith("--") }.map { Class.forName(it) }
        val classes = named.ifEmpty { coreClasses }
        val rows = ArrayList<String>()
        var passed = 0
        var failed = 0
        var skipped = 0
        val core = JUnitCore()
        core.addListener(object : RunListener() {
            private var outcome: String? = null
            private var message = ""
            private var started = System.nanoTime()

            override fun testStarted(description: Description) {
                outcome = null
                message = ""
                started = System.nanoTime()
            }

            override fun testFailure(failure: Failure) {
                outcome = "failed"
                message = failure.message ?: failure.exception.javaClass.name
                System.err.println(failure.trace)
            }

            override fun testAssumptionFailure(failure: Failure) {
                outcome = "skipped"
                message = failure.message ?: ""
            }

            override fun testIgnored(description: Description) {
                finish(description, "skipped", "ignored")
            }

            override fun testFinished(description: Description) {
                finish(description, outcome ?: "passed", message)
            }

            private fun finish(description: Description, status: String, text: String) {
                when (status) {
                    "passed" -> passed++
                    "failed" -> failed++
                    else -> skipped++
                }
                val name = "${description.testClass.simpleName}.${description.methodName}"
                val seconds = "%.1f s".format((System.nanoTime() - started) / 1e9)
                println("$status  $name  $seconds${if (text.isNotEmpty()) "  ($text)" else ""}")
                rows.add("$name\t$status\t${text.replace('\n', ' ').replace('\t', ' ')}")
            }
        })
        core.run(*classes.toTypedArray())
        report?.let { file -> file.parentFile?.mkdirs(); file.writeText(rows.joinToString("\n", postfix = "\n")) }
        println("$passed passed, $failed failed, $skipped skipped")
        exitProcess(if (failed > 0 || (requireInputs && skipped > 0) || passed == 0) 1 else 0)
    }
}
