package org.whisperfinetune.android.ui

import android.os.Build
import androidx.compose.foundation.isSystemInDarkTheme
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.padding
import androidx.compose.material3.Card
import androidx.compose.material3.CardDefaults
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.Scaffold
import androidx.compose.material3.Tab
import androidx.compose.material3.TabRow
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.material3.darkColorScheme
import androidx.compose.material3.dynamicDarkColorScheme
import androidx.compose.material3.dynamicLightColorScheme
import androidx.compose.material3.lightColorScheme
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableIntStateOf
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import androidx.lifecycle.viewmodel.compose.viewModel
import org.whisperfinetune.android.Busy
import org.whisperfinetune.android.WhisperViewModel

private enum class Screen { Model, Transcribe, Benchmark, Settings }

@Composable
fun WhisperApp(viewModel: WhisperViewModel = viewModel()) {
    val state by viewModel.state.collectAsStateWithLifecycle()
    var screen by rememberSaveable { mutableIntStateOf(0) }
    Scaffold { padding ->
        Column(Modifier.padding(padding).imePadding().fillMaxSize()) {
            TabRow(selectedTabIndex = screen) {
                Screen.entries.forEachIndexed { index, entry ->
                    Tab(selected = screen == index, onClick = { screen = index }, text = { Text(entry.name) })
                }
            }
            state.busy?.let { BusyBar(it, onStop = viewModel::stopRecording, onCancel = viewModel::cancel) }
            state.message?.let { MessageCard(it, onDismiss = viewModel::dismissMessage) }
            val content = Modifier.fillMaxSize().padding(16.dp)
            when (Screen.entries[screen]) {
                Screen.Model -> ModelScreen(state, viewModel, content)
                Screen.Transcribe -> TranscribeScreen(state, viewModel, content)
                Screen.Benchmark -> BenchmarkScreen(state, viewModel, content)
                Screen.Settings -> SettingsScreen(state.settings, viewModel::updateSettings, content)
            }
        }
    }
}

@Composable
private fun BusyBar(busy: Busy, onStop: () -> Unit, onCancel: () -> Unit) {
    Column(Modifier.fillMaxWidth().padding(horizontal = 16.dp, vertical = 8.dp)) {
        Row(verticalAlignment = Alignment.CenterVertically) {
            Text(busy.label, Modifier.weight(1f), style = MaterialTheme.typography.bodyMedium)
            if (busy is Busy.Recording) TextButton(onClick = onStop) { Text("Stop and transcribe") }
            TextButton(onClick = onCancel) { Text("Cancel") }
        }
        val fraction = (busy as? Busy.Downloading)?.fraction
        if (fraction != null) {
            LinearProgressIndicator(progress = { fraction }, modifier = Modifier.fillMaxWidth())
        } else {
            LinearProgressIndicator(Modifier.fillMaxWidth())
        }
    }
}

@Composable
private fun MessageCard(message: String, onDismiss: () -> Unit) {
    Card(
        Modifier.fillMaxWidth().padding(horizontal = 16.dp, vertical = 4.dp),
        colors = CardDefaults.cardColors(containerColor = MaterialTheme.colorScheme.secondaryContainer),
    ) {
        Row(Modifier.padding(start = 16.dp, end = 8.dp), verticalAlignment = Alignment.CenterVertically,
            horizontalArrangement = Arrangement.SpaceBetween) {
            Text(message, Modifier.weight(1f).padding(vertical = 12.dp))
            TextButton(onClick = onDismiss) { Text("OK") }
        }
    }
}

@Composable
fun WhisperTheme(content: @Composable () -> Unit) {
    val dark = isSystemInDarkTheme()
    val colors = when {
        Build.VERSION.SDK_INT >= Build.VERSION_CODES.S ->
            if (dark) dynamicDarkColorScheme(LocalContext.current) else dynamicLightColorScheme(LocalContext.current)
        dark -> darkColorScheme()
        else -> lightColorScheme()
    }
    MaterialTheme(colorScheme = colors, content = content)
}
