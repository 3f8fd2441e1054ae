package org.whisperfinetune.android

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.activity.enableEdgeToEdge
import org.whisperfinetune.android.ui.WhisperApp
import org.whisperfinetune.android.ui.WhisperTheme

class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        enableEdgeToEdge()
        setContent { WhisperTheme { WhisperApp() } }
    }
}
