package org.whisperfinetune.android.ui

import android.Manifest
import android.content.ClipData
import android.content.ClipboardManager
import android.content.Context
import android.content.Intent
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.lazy.rememberLazyListState
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.HorizontalDivider
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Slider
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.text.input.KeyboardType
import androidx.compose.ui.unit.dp
import kotlin.math.roundToInt
import org.whisperfinetune.android.ModelEntry
import org.whisperfinetune.android.Recorder
import org.whisperfinetune.android.Settings
import org.whisperfinetune.android.UiState
import org.whisperfinetune.android.WhisperViewModel
import org.whisperfinetune.android.benchmarkLines
import org.whisperfinetune.android.describeModel
import org.whisperfinetune.android.mib
import org.whisperfinetune.core.Timestamps

@Composable
fun ModelScreen(state: UiState, viewModel: WhisperViewModel, modifier: Modifier) {
    val idle = state.busy == null
    val pickModel = rememberLauncherForActivityResult(ActivityResultContracts.OpenDocument()) { uri ->
        if (uri != null) viewModel.importModel(uri)
    }
    var url by rememberSaveable { mutableStateOf("") }
    var sha256 by rememberSaveable { mutableStateOf("") }
    LazyColumn(modifier, verticalArrangement = Arrangement.spacedBy(12.dp)) {
        item {
            val loaded = state.loaded
            Column {
                Text(
                    if (loaded != null) "Loaded: ${loaded.name}" else "No model loaded",
                    style = MaterialTheme.typography.titleMedium,
                )
                Text(
                    loaded?.let { describeModel(it.info) }
                        ?: "Load a GGML file made by convert-ggml.py: a q5_0 or q8_0 export suits a phone.",
                    style = MaterialTheme.typography.bodyMedium,
                )
            }
        }
        if (state.models.isNotEmpty()) item { HorizontalDivider() }
        items(state.models, key = { it.name }) { entry ->
            ModelRow(entry, isLoaded = state.loaded?.name == entry.name, idle = idle,
                onLoad = { viewModel.loadModel(entry) }, onDelete = { viewModel.deleteModel(entry) })
        }
        item { HorizontalDivider() }
        item {
            OutlinedButton(onClick = { pickModel.launch(arrayOf("*/*")) }, enabled = idle) {
                Text("Import a model file…")
            }
        }
        item {
            Column(verticalArrangement = Arrangement.spacedBy(8.dp)) {
                Text("Download a model", style = MaterialTheme.typography.titleSmall)
                OutlinedTextField(
                    value = url,
                    onValueChange = { url = it },
                    label = { Text("https://… .bin") },
                    singleLine = true,
                    keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Uri),
                    modifier = Modifier.fillMaxWidth(),
                )
                OutlinedTextField(
                    value = sha256, onValueChange = { sha256 = it }, label = { Text("sha256 (optional)") },
                    singleLine = true, modifier = Modifier.fillMaxWidth(),
                )
                Button(onClick = { viewModel.downloadModel(url, sha256) }, enabled = idle && url.isNotBlank()) {
                    Text("Download and load")
                }
            }
        }
    }
}

@Composable
private fun ModelRow(entry: ModelEntry, isLoaded: Boolean, idle: Boolean, onLoad: () -> Unit, onDelete: () -> Unit) {
    Row(verticalAlignment = Alignment.CenterVertically) {
        Column(Modifier.weight(1f)) {
            Text(entry.name, style = MaterialTheme.typography.bodyLarge)
            val where = if (entry.bundled) "bundled" else "imported"
            Text(
                listOfNotNull(where, entry.sizeBytes?.let(::mib)).joinToString(" · "),
                style = MaterialTheme.typography.bodySmall,
            )
        }
        TextButton(onClick = onLoad, enabled = idle && !isLoaded) { Text(if (isLoaded) "Loaded" else "Load") }
        if (entry.file != null) TextButton(onClick = onDelete, enabled = idle) { Text("Delete") }
    }
}

@Composable
fun TranscribeScreen(state: UiState, viewModel: WhisperViewModel, modifier: Modifier) {
    val context = LocalContext.current
    val pickAudio = rememberLauncherForActivityResult(ActivityResultContracts.OpenDocument()) { uri ->
        if (uri != null) viewModel.transcribeFile(uri)
    }
    val askMicrophone = rememberLauncherForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
        if (granted) viewModel.startRecording() else viewModel.microphoneRefused()
    }
    val list = rememberLazyListState()
    LaunchedEffect(state.segments.size) {
        if (state.segments.isNotEmpty()) list.animateScrollToItem(state.segments.size - 1)
    }
    Column(modifier, verticalArrangement = Arrangement.spacedBy(8.dp)) {
        if (state.loaded == null) Text("Load a model first (Model tab).", style = MaterialTheme.typography.bodyMedium)
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button(onClick = { pickAudio.launch(arrayOf("audio/*")) }, enabled = state.canRun) { Text("Audio file…") }
            Button(
                onClick = {
                    if (Recorder.hasPermission(context)) viewModel.startRecording()
                    else askMicrophone.launch(Manifest.permission.RECORD_AUDIO)
                },
                enabled = state.canRun,
            ) { Text("Record") }
        }
        state.transcriptSource?.let { Text(it, style = MaterialTheme.typography.bodySmall) }
        if (state.segments.isNotEmpty() && state.busy == null) {
            Row {
                TextButton(onClick = { copyText(context, Timestamps.lines(state.segments)) }) { Text("Copy") }
                TextButton(onClick = { shareText(context, Timestamps.lines(state.segments)) }) { Text("Share") }
            }
        }
        LazyColumn(state = list, modifier = Modifier.weight(1f), verticalArrangement = Arrangement.spacedBy(8.dp)) {
            items(state.segments) { segment ->
                Column {
                    Text(
                        "${Timestamps.format(segment.startMs)} → ${Timestamps.format(segment.endMs)}",
                        style = MaterialTheme.typography.labelSmall,
                        color = MaterialTheme.colorScheme.primary,
                    )
                    Text(segment.text.trim(), style = MaterialTheme.typography.bodyLarge)
                }
            }
        }
    }
}

@Composable
fun BenchmarkScreen(state: UiState, viewModel: WhisperViewModel, modifier: Modifier) {
    Column(modifier.verticalScroll(rememberScrollState()), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        Text(
            "Times whisper.cpp on this phone with the loaded model and the current settings: the encoder and the " +
                "decoder separately, and the real-time factor (processing time over audio length, below 1 is faster " +
                "than real time). It runs on the last transcribed audio, or on 10 s of silence before there is any.",
            style = MaterialTheme.typography.bodyMedium,
        )
        Button(onClick = viewModel::runBenchmark, enabled = state.canRun) { Text("Run benchmark") }
        state.benchmark?.let { result ->
            benchmarkLines(result).forEach { Text(it, style = MaterialTheme.typography.bodyLarge) }
        }
        state.systemInfo?.let {
            Spacer(Modifier.height(8.dp))
            Text(it, style = MaterialTheme.typography.bodySmall)
        }
    }
}

@Composable
fun SettingsScreen(settings: Settings, onChange: (Settings) -> Unit, modifier: Modifier) {
    val cores = Runtime.getRuntime().availableProcessors()
    var languageText by rememberSaveable { mutableStateOf(settings.language ?: "auto") }
    Column(modifier.verticalScroll(rememberScrollState()), verticalArrangement = Arrangement.spacedBy(16.dp)) {
        OutlinedTextField(
            value = languageText,
            onValueChange = {
                languageText = it
                onChange(settings.copy(language = Settings.parseLanguage(it)))
            },
            label = { Text("Language: auto, or a code such as en, zh, de") },
            singleLine = true,
            modifier = Modifier.fillMaxWidth(),
        )
        Row(verticalAlignment = Alignment.CenterVertically) {
            Text("Translate to English", Modifier.weight(1f))
            Switch(checked = settings.translate, onCheckedChange = { onChange(settings.copy(translate = it)) })
        }
        Column {
            Text(if (settings.threads == 0) "Threads: automatic ($cores cores)" else "Threads: ${settings.threads}")
            Slider(
                value = settings.threads.toFloat(),
                onValueChange = { onChange(settings.copy(threads = it.roundToInt())) },
                valueRange = 0f..cores.toFloat(),
                steps = (cores - 1).coerceAtLeast(0),
            )
        }
        Column {
            Text(if (settings.beamSize == 1) "Beam size: 1 (greedy, fastest)" else "Beam size: ${settings.beamSize}")
            Slider(
                value = settings.beamSize.toFloat(),
                onValueChange = { onChange(settings.copy(beamSize = it.roundToInt())) },
                valueRange = 1f..Settings.MAX_BEAM_SIZE.toFloat(),
                steps = Settings.MAX_BEAM_SIZE - 2,
            )
        }
    }
}

private fun copyText(context: Context, text: String) {
    context.getSystemService(ClipboardManager::class.java)
        ?.setPrimaryClip(ClipData.newPlainText("transcript", text))
}

private fun shareText(context: Context, text: String) {
    val send = Intent(Intent.ACTION_SEND).setType("text/plain").putExtra(Intent.EXTRA_TEXT, text)
    context.startActivity(Intent.createChooser(send, null))
}
