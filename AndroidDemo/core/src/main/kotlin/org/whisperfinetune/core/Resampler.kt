package org.whisperfinetune.core

import kotlin.math.PI
import kotlin.math.abs
import kotlin.math.ceil
import kotlin.math.min
import kotlin.math.sin
import kotlin.math.sqrt

/**
 * Mixing to mono and band-limited resampling to Whisper's 16 kHz, close to what the toolkit does on a computer
 * (channel mean, then soxr): a Kaiser-windowed sinc with 64 zero crossings each side, cut off at 96% of the
 * lower Nyquist frequency. Rational rate pairs (every common rate) use a precomputed table per phase.
 */
object Resampler {
    const val SAMPLE_RATE = 16000
    private const val ZERO_CROSSINGS = 64
    private const val KAISER_BETA = 12.0
    private const val CUTOFF = 0.96
    private const val MAX_TABLE = 1 shl 22           // floats in a per-phase table before falling back
    private const val OVERSAMPLING = 1024            // kernel points per zero crossing in the fallback

    fun toMono16k(samples: FloatArray, channels: Int, rate: Int): FloatArray =
        resample(mix(samples, channels), rate, SAMPLE_RATE)

    /** The mean of the channels of interleaved [samples]. */
    fun mix(samples: FloatArray, channels: Int): FloatArray {
        require(channels >= 1) { "channels must be at least 1, got $channels" }
        require(samples.size % channels == 0) { "${samples.size} samples do not divide into $channels channels" }
        if (channels == 1) return samples
        val frames = samples.size / channels
        return FloatArray(frames) { frame ->
            var sum = 0f
            for (c in 0 until channels) sum += samples[frame * channels + c]
            sum / channels
        }
    }

    fun resample(input: FloatArray, fromRate: Int, toRate: Int): FloatArray {
        require(fromRate > 0 && toRate > 0) { "sample rates must be positive, got $fromRate and $toRate" }
        if (fromRate == toRate) return input
        val divisor = gcd(fromRate, toRate)
        val up = toRate / divisor            // output samples per `down` input samples
        val down = fromRate / divisor
        val outLength = Math.round(input.size.toDouble() * toRate / fromRate).toInt()
        val cutoff = min(1.0, toRate.toDouble() / fromRate) * CUTOFF   // in cycles per input sample x 2
        val half = ZERO_CROSSINGS / cutoff   // kernel half-width in input samples
        val reach = ceil(half).toInt()
        val taps = 2 * reach
        val kernel = Kernel(cutoff, half)
        val table = if (up.toLong() * taps <= MAX_TABLE) {
            FloatArray(up * taps).also { t ->
                for (phase in 0 until up) kernel.fill(phase.toDouble() / up, reach, t, phase * taps)
            }
        } else null
        val scratch = if (table == null) FloatArray(taps) else null
        val out = FloatArray(outLength)
        for (n in 0 until outLength) {
            val position = n.toLong() * down
            val base = (position / up).toInt()               // input index at or before the output instant
            val phase = (position % up).toInt()
            val coefficients: FloatArray
            val offset: Int
            if (table != null) {
                coefficients = table
                offset = phase * taps
            } else {
                kernel.fillInterpolated(phase.toDouble() / up, reach, scratch!!)
                coefficients = scratch
                offset = 0
            }
            // Taps j = 0 until taps read input[base - reach + 1 + j]; outside the signal counts as silence.
            val first = base - reach + 1
            val from = maxOf(0, -first)
            val to = minOf(taps, input.size - first)
            var sum = 0.0
            for (j in from until to) sum += coefficients[offset + j] * input[first + j]
            out[n] = sum.toFloat()
        }
        return out
    }

    private tailrec fun gcd(a: Int, b: Int): Int = if (b == 0) a else gcd(b, a % b)

    /** The windowed sinc h(d) = cutoff * sinc(cutoff * d) * kaiser(d / half), d in input samples. */
    private class Kernel(private val cutoff: Double, private val half: Double) {
        private val norm = 1.0 / besselI0(KAISER_BETA)
        private val fine: FloatArray by lazy {
            FloatArray(ZERO_CROSSINGS * OVERSAMPLING + 2) { i -> value(i.toDouble() / OVERSAMPLING / cutoff).toFloat() }
        }

        fun value(d: Double): Double {
            val x = abs(d)
            if (x >= half) return 0.0
            val r = x / half
            val window = besselI0(KAISER_BETA * sqrt(1.0 - r * r)) * norm
            val arg = PI * cutoff * x
            val sinc = if (arg < 1e-9) 1.0 else sin(arg) / arg
            return cutoff * sinc * window
        }

        /** Coefficients for an output instant [frac] input samples after input index `base`. */
        fun fill(frac: Double, reach: Int, into: FloatArray, at: Int) {
            for (j in 0 until 2 * reach) into[at + j] = value(frac - (j - reach + 1)).toFloat()
        }

        fun fillInterpolated(frac: Double, reach: Int, into: FloatArray) {
            for (j in 0 until 2 * reach) {
                val crossings = abs(frac - (j - reach + 1)) * cutoff * OVERSAMPLING
                val i = crossings.toInt()
                into[j] = if (i >= fine.size - 1) 0f else {
                    val t = (crossings - i).toFloat()
                    fine[i] * (1 - t) + fine[i + 1] * t
                }
            }
        }

        private fun besselI0(x: Double): Double {
            var sum = 1.0
            var term = 1.0
            val q = x * x / 4
            var k = 1
            while (term > sum * 1e-17) {
                term *= q / (k.toDouble() * k)
                sum += term
                k++
            }
            return sum
        }
    }
}
