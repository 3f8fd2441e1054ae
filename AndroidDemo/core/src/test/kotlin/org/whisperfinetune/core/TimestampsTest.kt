package org.whisperfinetune.core

import org.junit.Assert.assertEquals
import org.junit.Test

class TimestampsTest {
    @Test
    fun formatsHoursMinutesSecondsAndMilliseconds() {
        assertEquals("00:00:00.000", Timestamps.format(0))
        assertEquals("00:01:02.345", Timestamps.format(62_345))
        assertEquals("01:00:00.001", Timestamps.format(3_600_001))
        assertEquals("27:46:40.000", Timestamps.format(100_000_000))
    }

    @Test
    fun writesSubRip() {
        val srt = Timestamps.srt(listOf(Segment(0, 2_500, " Hello there."), Segment(2_500, 61_020, "General Kenobi!")))
        assertEquals(
            "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n" +
                "2\n00:00:02,500 --> 00:01:01,020\nGeneral Kenobi!\n\n",
            srt,
        )
        assertEquals("", Timestamps.srt(emptyList()))
    }

    @Test
    fun writesPlainLinesForSharing() {
        assertEquals(
            "[00:00:00.000 -> 00:00:01.200] one\n[00:00:01.200 -> 00:00:03.000] two",
            Timestamps.lines(listOf(Segment(0, 1_200, "one "), Segment(1_200, 3_000, " two"))),
        )
    }

    @Test(expected = IllegalArgumentException::class)
    fun refusesNegativeTimes() {
        Timestamps.format(-1)
    }
}
