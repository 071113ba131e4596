// The `sftctl data --json` report: what was read, formatted and packed, and sample examples
// with their text, masked text, token ids and trained flags. Written through a JSONStreamWriter
// so its time and memory stay linear in the samples' size (a 20 MB record included).
import Foundation

extension PreparedDataset {
    /// Writes the report as one JSON object (keys sorted) to `w`, then flushes it.
    public func writeJSON(plan: BatchPlan, samples: [TokenizedExample], template: String, seconds: Double,
                          to w: JSONStreamWriter) throws {
        let d = datasetReport, f = formattingReport, p = plan.report
        var dataset: [String: Any] = ["path": d.path, "file_kind": d.fileFormat, "format": d.format.rawValue, "records": d.records]
        dataset["examples"] = d.examples
        dataset["leading_assistant_turns_dropped"] = d.leadingAssistantTurnsDropped
        dataset["truncated_file"] = d.truncated ?? NSNull()
        dataset["skipped"] = d.skipped.map { ["line": $0.location.line, "record": $0.location.index, "reason": $0.reason] as [String: Any] }
        dataset["invalid_utf8_records"] = d.invalidUTF8Records
        dataset["invalid_utf8_lines"] = d.invalidUTF8Lines
        var formatting: [String: Any] = ["formatted": f.formatted, "tokens": f.tokens, "trained_tokens": f.trainedTokens]
        formatting["skipped"] = f.skipped.map { ["line": $0.location.line, "reason": $0.reason] as [String: Any] }
        var packing: [String: Any] = ["layout": p.layout.rawValue, "max_seq_length": p.maxSeqLength, "documents": p.documents]
        packing["tokens"] = p.tokens
        packing["trained_tokens"] = p.trainedTokens
        packing["rows"] = p.rows
        packing["efficiency"] = p.efficiency ?? NSNull()
        packing["truncated"] = p.truncated
        packing["truncated_tokens"] = p.truncatedTokens
        packing["dropped"] = p.dropped
        packing["dropped_tokens"] = p.droppedTokens
        packing["split"] = p.split
        packing["split_pieces"] = p.splitPieces
        packing["untrained"] = p.untrained
        packing["micro_batches_per_epoch"] = plan.microBatchesPerEpoch
        packing["steps_per_epoch"] = plan.stepsPerEpoch
        packing["total_steps"] = plan.totalSteps

        w.beginObject()
        try w.key("dataset"); try w.value(foundation: dataset)
        if let doctor = doctorReport { try w.key("doctor"); try w.value(doctor.json) }
        try w.key("formatting"); try w.value(foundation: formatting)
        try w.key("packing"); try w.value(foundation: packing)
        try w.key("samples")
        w.beginArray()
        for t in samples {
            w.beginObject()
            try w.key("ids")
            w.beginArray()
            for id in t.ids { try w.int(Int(id)) }
            try w.endArray()
            try w.key("line"); try w.int(t.source.line)
            try w.key("marked"); try w.string(t.markedText() ?? "")
            try w.key("record"); try w.int(t.source.index)
            try w.key("text"); try w.string(t.formatted?.text ?? "")
            try w.key("trained")
            w.beginArray()
            for b in t.trained { try w.bool(b) }
            try w.endArray()
            try w.endObject()
        }
        try w.endArray()
        try w.key("seconds"); try w.double(seconds)
        try w.key("template"); try w.string(template)
        try w.endObject()
        try w.flush()
    }
}
