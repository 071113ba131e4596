// Loading straight into bf16 (Loading.swift, `ModelLoader.load(_:on:bf16Linears:)`): for every
// zoo family (f16 safetensors), a bf16 safetensors copy (bytes copied as they are) and a
// non-file source (SyntheticWeights, read as f32 like GGUF), the loaded model equals bit for bit
// the f32 load followed by `setPrecision(.bf16)`; which Linears load bf16 follows the run's
// config (LoRA base, modules_to_save, full finetuning's freeze); and the backend's peak bytes
// while loading stay below the f32 model's size.
import Foundation
import SFTKernels
@testable import SFTCore
import XCTest

final class BF16LoadTests: XCTestCase {
    let families = ["gemma2", "gemma3", "llama31", "llama_yarn", "mistral", "mpt", "phi3", "qwen2", "qwen3", "smollm2"]

    /// Every parameter: name, dtype and its values' bit patterns (bf16 widened exactly).
    func snapshot(_ m: Module) throws -> [String: (DType, [UInt32])] {
        Dictionary(uniqueKeysWithValues: try m.namedParameters().map { ($0.0, ($0.1.value.dtype, try $0.1.value.floats().map(\.bitPattern))) })
    }

    /// Loads `source` the old way (f32, then LoRA, then setPrecision) and straight into bf16
    /// with `config`'s choice of Linears, and checks both models are the same, bit for bit.
    func checkSame(_ source: WeightSource, config: FinetuneConfig, label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let be = CPUBackend.shared
        func prepare(_ m: CausalLM) throws {
            switch config.method {
            case .lora, .qlora: try m.applyLoRA(config.lora, seed: 3)
            case .full:
                m.setTrainable(true)
                for (name, p) in m.namedParameters() where config.freeze.contains(where: { name.contains($0) }) { p.trainable = false }
            }
            try m.setPrecision(.bf16)
        }
        let old = try ModelLoader.load(source, on: be)
        try prepare(old)
        let new = try ModelLoader.load(source, on: be, bf16Linears: { config.loadsBF16(linear: $0) })
        try prepare(new)
        let (a, b) = (try snapshot(old), try snapshot(new))
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted(), label, file: file, line: line)
        var bf16Count = 0
        for (name, (dtype, bits)) in a {
            guard let (dtype2, bits2) = b[name] else { continue }
            XCTAssertEqual(dtype, dtype2, "\(label) \(name)", file: file, line: line)
            XCTAssertTrue(bits == bits2, "\(label) \(name): values differ", file: file, line: line)
            if dtype == .bf16 { bf16Count += 1 }
        }
        if config.method != .full || !config.freeze.isEmpty {
            XCTAssertGreaterThan(bf16Count, 0, "\(label): some weights are bf16", file: file, line: line)
        }
    }

    func loraConfig() -> FinetuneConfig {
        var c = FinetuneConfig()
        c.precision = .bf16
        c.method = .lora
        c.loraR = 4
        c.loraAlpha = 8
        c.loraTargetModules = ["all-linear"]
        return c
    }

    func testBF16LoadEqualsF32LoadThenSetPrecisionOnEveryFamily() throws {
        for family in families {
            let source = try openWeights(at: Fixtures.url("model/zoo/\(family)"))
            try checkSame(source, config: loraConfig(), label: family)
        }
    }

    /// On an accelerator (the emulated GPU on CI) the bf16 load gives the CPU's bits: the cast
    /// runs on that device, the bf16 bytes are uploaded as they are.
    func testBF16LoadOnEveryDeviceEqualsTheCPUs() throws {
        let sources: [WeightSource] = [try openWeights(at: Fixtures.url("model/zoo/qwen2")), try SyntheticWeights(shape: "tiny")]
        for source in sources {
            let want = try snapshot(try ModelLoader.load(source, on: CPUBackend.shared, bf16Linears: { _ in true }))
            for device in try TestDevices.all() where device != .cpu {
                let got = try snapshot(try ModelLoader.load(source, on: try SFTKernels.backend(for: device), bf16Linears: { _ in true }))
                for (name, (dtype, bits)) in want {
                    XCTAssertEqual(got[name]?.0, dtype, "\(device) \(name)")
                    XCTAssertTrue(got[name]?.1 == bits, "\(device) \(name): values differ from the CPU's")
                }
            }
        }
    }

    func testModulesToSaveAndFullFreezeDecideWhatLoadsBF16() throws {
        let source = try openWeights(at: Fixtures.url("model/zoo/llama31"))
        var c = loraConfig()
        c.modulesToSave = ["lm_head", "mlp"]
        XCTAssertFalse(c.loadsBF16(linear: "lm_head"))
        XCTAssertFalse(c.loadsBF16(linear: "model.layers.0.mlp.up_proj"), "under a module to save")
        XCTAssertTrue(c.loadsBF16(linear: "model.layers.0.self_attn.q_proj"))
        try checkSame(source, config: c, label: "modules_to_save")
        c.modulesToSave = []
        c.initLoRAWeights = .pissa(niter: nil)
        XCTAssertFalse(c.loadsBF16(linear: "model.layers.0.self_attn.q_proj"), "PiSSA rewrites the base from f32")
        var full = FinetuneConfig()
        full.precision = .bf16
        full.method = .full
        full.freeze = ["layers.0.", "lm_head"]
        XCTAssertTrue(full.loadsBF16(linear: "model.layers.0.mlp.down_proj"))
        XCTAssertFalse(full.loadsBF16(linear: "model.layers.1.mlp.down_proj"))
        try checkSame(source, config: full, label: "full with freeze")
        full.precision = .f32
        XCTAssertFalse(full.loadsBF16(linear: "model.layers.0.mlp.down_proj"), "f32 runs load f32")
    }

    /// A bf16 checkpoint: its bytes are copied as they are, equal to the f32 route.
    func testBF16SafetensorsAreCopiedAsStored() throws {
        let zoo = Fixtures.url("model/zoo/smollm2")
        let f16 = try openWeights(at: zoo)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-bf16load-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: zoo.appendingPathComponent("config.json"), to: dir.appendingPathComponent("config.json"))
        let tensors = try f16.names.map { ($0, try SafetensorsTensor(try f16.loadF32($0), shape: f16.shape(of: $0)!, as: .bf16)) }
        try Safetensors.write(tensors, to: dir.appendingPathComponent("model.safetensors"))
        let bf16 = try openWeights(at: dir)
        let q = "model.layers.0.self_attn.q_proj.weight"
        let raw = try XCTUnwrap(bf16.storedBF16(q), "a bf16 tensor hands out its bytes")
        XCTAssertEqual(raw.count, f16.shape(of: q)!.reduce(2, *))
        XCTAssertNil(f16.storedBF16(q), "an f16 tensor does not")
        try checkSame(bf16, config: loraConfig(), label: "bf16 safetensors")
    }

    /// A source read as f32 (GGUF's route) and the memory it takes: the backend's peak bytes
    /// while loading bf16 stay below the f32 model's size, which the f32 load reaches.
    func testBF16LoadPeakIsBelowTheF32ModelSize() throws {
        let be = CPUBackend.shared
        let source = try SyntheticWeights(shape: "tiny")
        try checkSame(source, config: loraConfig(), label: "synthetic")
        let f32Bytes = source.parameterCount * 4
        func peakWhileLoading(_ load: () throws -> CausalLM) throws -> Int {
            be.emptyCache()
            let base = be.memoryStats.currentBytes
            be.resetPeakMemory()
            let m = try load()
            let peak = be.memoryStats.peakBytes - base
            withExtendedLifetime(m) {}
            return peak
        }
        let f32Peak = try peakWhileLoading { try ModelLoader.load(source, on: be) }
        let bf16Peak = try peakWhileLoading { try ModelLoader.load(source, on: be, bf16Linears: { _ in true }) }
        XCTAssertGreaterThanOrEqual(f32Peak, f32Bytes, "the f32 load holds the f32 model")
        XCTAssertLessThan(bf16Peak, f32Bytes, "bf16 load: peak \(bf16Peak) bytes, f32 model \(f32Bytes)")
        // At most the bf16 model (Linears at 2 bytes, the embedding and norms at 4), one f32
        // staging tensor (the largest) and the model's small buffers (RoPE tables).
        let m = try ModelLoader.load(source, on: be, bf16Linears: { _ in true })
        let modelBytes = m.namedParameters().reduce(0) { $0 + $1.1.value.count * $1.1.value.dtype.size }
        let largest = source.names.map { source.shape(of: $0)!.reduce(4, *) }.max()!
        XCTAssertLessThanOrEqual(bf16Peak, modelBytes + largest + 4096)
        XCTAssertLessThan(modelBytes, f32Bytes * 2 / 3)
    }

    /// After loading, the file's resident pages are given back (they counted in the RSS); the
    /// mapping stays readable, for GGUF and safetensors alike.
    func testFilePagesGivenBackAfterLoadingStayReadable() throws {
        let folder = try openWeights(at: Fixtures.url("model/zoo/smollm2"))
        let m = try ModelLoader.load(folder, on: CPUBackend.shared)
        let embed = "model.embed_tokens.weight"
        let p = try XCTUnwrap(m.namedParameters().first { $0.0 == embed }?.1)
        XCTAssertEqual(try folder.loadF32(embed), try p.value.floats())
        let gguf = try GGUFWeights(url: Fixtures.url("formats/permute.gguf"))
        let name = try XCTUnwrap(gguf.names.first)
        let before = try gguf.loadF32(name)
        gguf.releaseResidentPages()
        XCTAssertEqual(try gguf.loadF32(name).map(\.bitPattern), before.map(\.bitPattern))
    }

    func testABF16WeightThatTrainsIsRefused() throws {
        let m = try ModelLoader.load(try SyntheticWeights(shape: "tiny"), on: CPUBackend.shared, bf16Linears: { _ in true })
        m.setTrainable(true)
        XCTAssertThrowsError(try m.setPrecision(.bf16)) { XCTAssertTrue("\($0)".contains("loaded bf16 but trains"), "\($0)") }
    }
}
