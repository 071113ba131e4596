// The one key table (FinetuneConfigKeys.swift): every key reads from JSON and from flags and
// writes back the same config; `--help` lists every key with its allowed values; an unknown key
// is refused naming it and the nearest known key; a bad name lists the allowed values.
import Foundation
@testable import SFTCore
import SFTKernels
import XCTest

final class FinetuneConfigKeysTests: XCTestCase {
    /// A value other than the default for every key (a key added to the table without one here
    /// fails `testEveryKeyRoundTripsThroughJSONAndFlags`).
    nonisolated(unsafe) static let everyKey: [String: Any] = [
        "model": "m.gguf", "data": "d.jsonl", "eval_data": "e.jsonl", "eval_split": 0.25, "output_dir": "out",
        "method": "qlora", "template": "chatml", "device": "cuda:1", "threads": 3, "lora_r": 8, "lora_alpha": 12.5,
        "lora_dropout": 0.1, "lora_target_modules": ["q_proj", "v_proj"], "use_rslora": true,
        "init_lora_weights": "pissa_niter_4", "rank_pattern": ["q_proj": 4], "alpha_pattern": ["v_proj": 3.5],
        "use_dora": true, "loraplus_lr_ratio": 16, "loraplus_lr_embedding": 1e-6, "neftune_noise_alpha": 5,
        "modules_to_save": ["lm_head"], "freeze": ["embed"], "quantize": "fp4", "double_quant": false,
        "quant_block_size": 128, "learning_rate": 1e-4, "num_train_epochs": 3, "max_steps": 7,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4, "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1, "warmup_steps": 5, "min_lr_ratio": 0.1, "weight_decay": 0.01, "adam_beta1": 0.8,
        "adam_beta2": 0.99, "adam_epsilon": 1e-6, "max_grad_norm": 0.5, "gradient_checkpointing": true,
        "logging_steps": 2, "eval_steps": 3, "early_stopping_patience": 2, "save_steps": 10, "save_each_epoch": true,
        "save_total_limit": 2, "resume_from_checkpoint": "latest", "overwrite_output_dir": true,
        "stop_on_divergence": false, "seed": 7, "sample_prompts": ["Hi, there", "[not a list"], "sample_max_new_tokens": 16,
        "logging": ["jsonl", "tensorboard"], "zero_stage": 1, "collective_timeout": 60, "ddp_bucket_cap_mb": 0.5, "skip_memory_check": true, "precision": "bf16", "allow_precision_change": true, "format": "sharegpt",
        "fields": ["instruction": "question"], "strict": true, "limit": 10, "subset_seed": 3, "mask_policy": "last_turn",
        "train_end_of_turn": false, "max_seq_length": 512, "packing": false, "padding_free": true,
        "cross_document_attention": true, "truncation": "split", "prompt_template": "Q: {instruction}\nA: ",
        "span_end": "exclusive", "tools": "tools.json", "doctor": false,
    ]

    func testEveryKeyRoundTripsThroughJSONAndFlags() throws {
        let keys = FinetuneConfig.keys
        XCTAssertEqual(Set(keys.map(\.name)), Set(Self.everyKey.keys), "every key has a test value")
        XCTAssertEqual(Set(keys.map(\.name)).count, keys.count, "no key declared twice")
        let c = try FinetuneConfig.from(json: Self.everyKey)
        let defaults = FinetuneConfig()
        for k in keys {
            XCTAssertNotEqual(k.write(c), k.write(defaults), "\(k.name) was read")
        }
        XCTAssertEqual(c.method, .qlora)
        XCTAssertEqual(c.device, .cuda(1))
        XCTAssertEqual(c.quantize, .fp4)
        XCTAssertEqual(c.lrSchedulerType, .cosine)
        XCTAssertEqual(c.dataConfig.format, .sharegpt)
        XCTAssertEqual(c.dataConfig.maskPolicy, .lastTurn)
        XCTAssertEqual(c.dataConfig.truncation, .split)
        XCTAssertEqual(c.dataConfig.spanEnd, .exclusive)

        // JSON (config.json) and back.
        XCTAssertEqual(try FinetuneConfig.from(json: c.json()), c)
        let encoded = try JSONEncoder().encode(c)
        XCTAssertEqual(try JSONDecoder().decode(FinetuneConfig.self, from: encoded), c)
        // Flags and back: one `--key value` per key.
        let words = c.flags()
        XCTAssertEqual(words.count, 2 * keys.count)
        let flags = stride(from: 0, to: words.count, by: 2).map { (name: String(words[$0].dropFirst(2)), words: [words[$0 + 1]]) }
        XCTAssertEqual(try FinetuneConfig.from(json: [:], flags: flags), c)
        // Each key alone, as a flag with hyphens, over an empty config.
        for (name, value) in flags {
            let one = try FinetuneConfig.from(json: [:], flags: [(name.replacingOccurrences(of: "_", with: "-"), value)])
            let k = FinetuneConfig.key(named: name)!
            XCTAssertEqual(k.write(one), k.write(c), name)
        }
    }

    func testFlagListsAndAliases() throws {
        let c = try FinetuneConfig.from(json: ["lora_r": 4], flags: [
            ("lora_target_modules", ["q_proj,v_proj", "o_proj"]), ("sample_prompts", ["a, b", "c"]),
            ("logging", ["jsonl,tensorboard"]), ("lora_r", ["8"]), ("max_length", ["64"]), ("device", ["cuda"]),
        ])
        XCTAssertEqual(c.loraTargetModules, ["q_proj", "v_proj", "o_proj"])
        XCTAssertEqual(c.samplePrompts, ["a, b", "c"], "prompts are not split at commas")
        XCTAssertEqual(c.logging, [.jsonl, .tensorboard])
        XCTAssertEqual(c.loraR, 8, "flags win over the file")
        XCTAssertEqual(c.dataConfig.maxSeqLength, 64)
        XCTAssertEqual(c.device, .cuda(nil))
        XCTAssertEqual(c.device.device(localRank: 3), .cuda(3))
        XCTAssertEqual(try FinetuneConfig.from(json: ["target_modules": "q_proj", "r": 2]).loraTargetModules, ["q_proj"])
        // In the file a string is one element (PEFT reads a target_modules string as a regex)...
        XCTAssertEqual(try FinetuneConfig.from(json: ["lora_target_modules": ".*\\.(q|v)_proj{1,2}"]).loraTargetModules, [".*\\.(q|v)_proj{1,2}"])
        // ...but logging takes a comma list there too, and "auto" is the unset format in any case.
        XCTAssertEqual(try FinetuneConfig.from(json: ["logging": "jsonl, tensorboard"]).logging, [.jsonl, .tensorboard])
        XCTAssertNil(try FinetuneConfig.from(json: ["format": "AUTO"]).dataConfig.format)
        XCTAssertEqual(try FinetuneConfig.from(json: ["init_lora_weights": false]).initLoRAWeights, .random)
        XCTAssertThrowsError(try FinetuneConfig.from(json: ["lora_r": 2, "r": 4])) { e in
            XCTAssertTrue("\(e)".contains("given twice"), "\(e)")
        }
    }

    func testHelpListsEveryKeyWithItsAllowedValues() {
        let help = FinetuneConfig.keysHelp
        for k in FinetuneConfig.keys {
            XCTAssertTrue(help.contains("  \(k.name) "), k.name)
        }
        for values in ["lora | qlora | full", "cpu | cuda | cuda:N", "nf4 | fp4", "constant | constant_with_warmup | cosine | linear",
                       "truncate | drop | split", "inclusive | exclusive", "auto | alpaca", "default 0.0002", "in (0, ∞)"] {
            XCTAssertTrue(help.contains(values), values)
        }
    }

    /// The doc comments of FinetuneConfig's and DataConfig's properties name each key, its flag
    /// and its aliases ("Key `lora_r` (alias `r`), flag `--lora-r`"), once, right above a
    /// property, and a default they state is the table's; a key added, renamed or given another
    /// default without its doc comment fails here.
    func testEveryKeyIsDocumentedOnItsPropertyWithItsFlagAndDefault() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../Sources/SFTCore")
        var blocks: [String] = []  // each doc comment that sits directly above a `public var`
        for file in ["Training/FinetuneConfig.swift", "Data/DataPipeline.swift"] {
            var doc: [String] = []
            for line in try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false) {
                let t = line.trimmingCharacters(in: .whitespaces)
                if t.hasPrefix("///") { doc.append(String(t.dropFirst(3)).trimmingCharacters(in: .whitespaces)); continue }
                if t.hasPrefix("public var "), !doc.isEmpty { blocks.append(doc.joined(separator: " ")) }
                doc = []
            }
        }
        var documented: [String] = []
        for block in blocks {
            guard let r = block.range(of: #"Key `([a-z0-9_]+)`"#, options: .regularExpression) else { continue }
            documented.append(String(block[r].dropFirst(5).dropLast()))
        }
        XCTAssertEqual(documented.sorted(), FinetuneConfig.keys.map(\.name).sorted(), "keys named in doc comments vs the key table")
        for k in FinetuneConfig.keys {
            guard let block = blocks.first(where: { $0.contains("Key `\(k.name)`") }) else { continue }
            XCTAssertTrue(block.contains("flag `--\(k.name.replacingOccurrences(of: "_", with: "-"))`"), "\(k.name): flag")
            for a in k.aliases { XCTAssertTrue(block.contains("alias `\(a)`"), "\(k.name): alias \(a)") }
            // "default X": a number equal to the table's default, or the same word.
            guard let r = block.range(of: #"default [^ ;,()]+"#, options: .regularExpression), let table = k.defaultText else { continue }
            let stated = block[r].dropFirst(8).trimmingCharacters(in: CharacterSet(charactersIn: "."))
            if let a = Double(stated), let b = Double(table) {
                XCTAssertEqual(a, b, "\(k.name): doc says default \(stated), the table \(table)")
            } else if !stated.hasPrefix("[") && stated != "none" && stated != "empty" {
                XCTAssertEqual(stated, table, "\(k.name): default")
            }
        }
    }

    func testUnknownKeysAreNamedWithTheNearestKnownKey() {
        func refusal(_ body: () throws -> FinetuneConfig) -> (String, String)? {
            do { _ = try body(); return nil } catch SFTError.config(let field, let message) { return (field, message) } catch { return ("?", "\(error)") }
        }
        let file = refusal { try FinetuneConfig.from(json: ["learnin_rate": 1]) }
        XCTAssertEqual(file?.0, "learnin_rate")
        XCTAssertTrue(file?.1.contains("did you mean learning_rate?") ?? false, file?.1 ?? "accepted")
        let flag = refusal { try FinetuneConfig.from(json: [:], flags: [("gradient-acumulation-steps", ["2"])]) }
        XCTAssertEqual(flag?.0, "gradient-acumulation-steps")
        XCTAssertTrue(flag?.1.contains("did you mean gradient_accumulation_steps?") ?? false, flag?.1 ?? "accepted")
        let far = refusal { try FinetuneConfig.from(json: ["wandb_project": "x"]) }
        XCTAssertEqual(far?.0, "wandb_project")
        XCTAssertFalse(far?.1.contains("did you mean") ?? true, "no far-fetched suggestion")
        XCTAssertNil(refusal { try FinetuneConfig.from(json: ["_comment": "ignored"]) })
    }

    func testBadValuesNameTheKeyAndTheAllowedValues() {
        let cases: [(String, Any, [String])] = [
            ("method", "lorax", ["'lorax'", "lora | qlora | full"]), ("device", "gpu", ["'gpu'", "cpu | cuda | cuda:N"]),
            ("quantize", "int8", ["nf4 | fp4"]), ("lr_scheduler_type", "cosine_with_restarts", ["constant_with_warmup"]),
            ("logging", ["jsonl", "wandb"], ["'wandb'", "jsonl | tensorboard"]), ("init_lora_weights", "loftq", ["pissa_niter_K"]),
            ("lora_r", "eight", ["an integer"]), ("learning_rate", "fast", ["a number"]), ("packing", "yes", ["true or false"]),
        ]
        for (key, value, parts) in cases {
            XCTAssertThrowsError(try FinetuneConfig.from(json: [key: value]), key) { e in
                guard case SFTError.config(let field, let message) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(field, key)
                for p in parts { XCTAssertTrue(message.contains(p), "\(key): \(message)") }
            }
        }
        // JSON has no NaN; a flag spelling one is refused by name.
        XCTAssertThrowsError(try FinetuneConfig.from(json: [:], flags: [("learning_rate", ["nan"])])) { e in
            XCTAssertTrue("\(e)".contains("learning_rate") && "\(e)".contains("NaN"), "\(e)")
        }
    }
}
