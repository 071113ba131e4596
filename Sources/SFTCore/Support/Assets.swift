// Where the real assets live (fetched by scripts/fetch-assets into .assets/, never committed).
import Foundation
import SFTKernels

/// The real model and dataset files tests, benchmarks and examples use (fetched by
/// scripts/fetch-assets into `.assets/`, never committed).
public enum Assets {
    /// The assets folder: $SFT_ASSETS, else the nearest `.assets` folder at or above the
    /// current directory, else `.assets` under the package root this file was compiled in.
    public static var directory: URL {
        if let env = ProcessInfo.processInfo.environment["SFT_ASSETS"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        var dir = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        for _ in 0..<8 {
            let candidate = dir.appendingPathComponent(".assets")
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
            dir.deleteLastPathComponent()
        }
        // Sources/SFTCore/Support/Assets.swift -> package root
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".assets")
    }

    /// SmolLM2-135M-Instruct, GGUF Q4_1 (the default model).
    public static var smolLM2: URL { directory.appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf") }
    /// ShareGPT V3 conversations (the default dataset).
    public static var shareGPT: URL { directory.appendingPathComponent("ShareGPT_V3_unfiltered_cleaned_split.json") }

    /// Fails with a hint when an asset is missing.
    public static func require(_ url: URL) throws -> URL {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw SFTError.missingAsset(path: url.path, hint: "run scripts/fetch-assets")
        }
        return url
    }
}
