// Checkpoints that resume exactly: trainable weights, AdamW moments and step, the data cursor,
// the dropout random counter, early-stopping state and the fingerprint of data and settings.
//
// Written atomically: everything goes into a hidden temporary folder, each file is fsynced,
// and the folder is renamed to `checkpoint-STEP` last. A killed run leaves at most a temporary
// folder, which resume never picks (and the next save removes).

import Foundation
import SFTKernels

struct TrainerState: Codable {
    var globalStep: Int
    var cursor: DataCursor
    var optimizerStep: Int
    var randomOffset: UInt64
    var randomSeed: UInt64
    var bestEval: Double?
    var evalsWithoutImprovement: Int
    var trainedTokens: Int
    var elapsedSeconds: Double
    var fingerprint: [String: String]

    enum CodingKeys: String, CodingKey {
        case globalStep = "global_step", cursor, optimizerStep = "optimizer_step", randomOffset = "random_offset"
        case randomSeed = "random_seed", bestEval = "best_eval_loss", evalsWithoutImprovement = "evals_without_improvement"
        case trainedTokens = "trained_tokens", elapsedSeconds = "elapsed_seconds", fingerprint
    }
}

extension Trainer {
    /// Checkpoint folders of a run, oldest first (only complete ones: the name is given last).
    public static func checkpoints(in output: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: output.path)) ?? []
        return names.compactMap { n -> (Int, URL)? in
            guard n.hasPrefix("checkpoint-"), let s = Int(n.dropFirst("checkpoint-".count)) else { return nil }
            let url = output.appendingPathComponent(n)
            guard FileManager.default.fileExists(atPath: url.appendingPathComponent("trainer_state.json").path) else { return nil }
            return (s, url)
        }.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// Writes `checkpoint-STEP` atomically and prunes old ones beyond `saveTotalLimit`.
    /// With several ranks every rank calls it (sharded optimizer states are gathered) and rank 0
    /// writes.
    @discardableResult
    public func saveCheckpoint(elapsed: Double) throws -> URL {
        let fm = FileManager.default
        let final = outputDirectory.appendingPathComponent("checkpoint-\(globalStep)")
        let gathered = try parallel.atStep(globalStep, "gathering optimizer states") { try parallel.fullMoments(optimizer, parameters) }
        lastCheckpointStep = globalStep
        guard let allMoments = gathered else { return final }
        try fm.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
        for n in (try? fm.contentsOfDirectory(atPath: outputDirectory.path)) ?? [] where n.hasPrefix(".tmp-checkpoint-") {
            try? fm.removeItem(at: outputDirectory.appendingPathComponent(n))
        }
        let tmp = outputDirectory.appendingPathComponent(".tmp-checkpoint-\(globalStep)-\(ProcessInfo.processInfo.processIdentifier)")
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        do {
            var weights: [(name: String, tensor: SafetensorsTensor)] = []
            var moments: [(name: String, tensor: SafetensorsTensor)] = []
            for ((name, p), mv) in zip(parameters, allMoments) {
                weights.append((name, try SafetensorsTensor(try p.value.floats(), shape: p.value.shape)))
                moments.append(("m." + name, try SafetensorsTensor(mv.m, shape: p.value.shape)))
                moments.append(("v." + name, try SafetensorsTensor(mv.v, shape: p.value.shape)))
            }
            try Safetensors.write(weights, to: tmp.appendingPathComponent("trainable.safetensors"))
            try Safetensors.write(moments, to: tmp.appendingPathComponent("optimizer.safetensors"))
            try onSave?(tmp)
            let state = TrainerState(globalStep: globalStep, cursor: loader.cursor, optimizerStep: optimizer.step,
                                     randomOffset: random.offset, randomSeed: random.seed,
                                     bestEval: bestEval, evalsWithoutImprovement: evalsWithoutImprovement,
                                     trainedTokens: trainedTokens, elapsedSeconds: elapsed, fingerprint: fingerprint)
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .prettyPrinted]
            try writeSynced(try e.encode(state), to: tmp.appendingPathComponent("trainer_state.json"))
            if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
            guard rename(tmp.path, final.path) == 0 else {
                throw SFTError.io(path: final.path, message: "cannot rename the checkpoint into place: \(String(cString: strerror(errno)))")
            }
            fsyncDirectory(outputDirectory)
        } catch {
            try? fm.removeItem(at: tmp)
            throw error
        }
        if let limit = config.saveTotalLimit, limit > 0 {
            for old in Trainer.checkpoints(in: outputDirectory).dropLast(limit) { try? fm.removeItem(at: old) }
        }
        return final
    }

    /// Restores weights, optimizer, data position and random state from a checkpoint folder.
    /// Refuses a checkpoint whose data or settings differ, saying what changed.
    func restore(from url: URL) throws {
        let stateURL = url.appendingPathComponent("trainer_state.json")
        guard let data = FileManager.default.contents(atPath: stateURL.path) else {
            throw SFTError.io(path: stateURL.path, message: "not a checkpoint (no trainer_state.json)")
        }
        let state: TrainerState
        do { state = try JSONDecoder().decode(TrainerState.self, from: data) } catch {
            throw SFTError.format(path: stateURL.path, offset: nil, message: "unreadable trainer state: \(error)")
        }
        var written = state.fingerprint
        written["precision"] = written["precision"] ?? Precision.f32.rawValue   // checkpoints from before bf16 were f32
        if written["precision"] != fingerprint["precision"] && !allowPrecisionChange {
            throw SFTError.config(field: "precision", message: "the checkpoint \(url.lastPathComponent) was trained in \(written["precision"] ?? "?"), this run is \(fingerprint["precision"] ?? "?"); resume in \(written["precision"] ?? "?"), or set allow_precision_change (--allow_precision_change) to continue in \(fingerprint["precision"] ?? "?")")
        }
        written["precision"] = fingerprint["precision"]
        for key in Set(fingerprint.keys).union(written.keys).sorted() where fingerprint[key] != written[key] {
            throw SFTError.config(field: key, message: "changed since the checkpoint \(url.lastPathComponent) was written: cannot resume exactly (checkpoint: \(written[key] ?? "none"), now: \(fingerprint[key] ?? "none"))")
        }
        let weights = try SafetensorsFile(url: url.appendingPathComponent("trainable.safetensors"))
        let moments = try SafetensorsFile(url: url.appendingPathComponent("optimizer.safetensors"))
        var m: [String: [Float]] = [:], v: [String: [Float]] = [:]
        for (name, p) in parameters {
            guard let info = weights.tensor(named: name), info.shape == p.value.shape else {
                throw SFTError.weights(key: name, message: "missing or of another shape in \(url.lastPathComponent)")
            }
            try p.value.assign(try weights.loadF32(name))
            guard optimizer.m[name] != nil else { continue }   // another rank's shard (zero_stage 1)
            m[name] = try moments.loadF32("m." + name)
            v[name] = try moments.loadF32("v." + name)
        }
        try optimizer.restore(step: state.optimizerStep, m: m, v: v)
        loader = try DataLoader(plan: loader.plan, cursor: state.cursor)
        random = RandomStream(seed: state.randomSeed, offset: state.randomOffset)
        globalStep = state.globalStep
        bestEval = state.bestEval
        evalsWithoutImprovement = state.evalsWithoutImprovement
        trainedTokens = state.trainedTokens
        elapsedBefore = state.elapsedSeconds
        lastCheckpointStep = state.globalStep
    }
}

/// Writes `data` to `url` and fsyncs it.
func writeSynced(_ data: Data, to url: URL) throws {
    guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
        throw SFTError.io(path: url.path, message: "cannot create file")
    }
    let h = try FileHandle(forWritingTo: url)
    defer { try? h.close() }
    try h.write(contentsOf: data)
    try h.synchronize()
}

func fsyncDirectory(_ url: URL) {
    let fd = open(url.path, O_RDONLY)
    if fd >= 0 { fsync(fd); close(fd) }
}
