// swift-tools-version:6.2
// sft: supervised finetuning of instruction-following LLMs, library first.
// No package dependencies: native code only through the system library COpenBLAS and the C shim
// CSFTKernels (CPU loops and the run-time CUDA loader).
import PackageDescription

let package = Package(
    name: "sft",
    products: [
        .library(name: "SFTCore", targets: ["SFTCore"]),
        .library(name: "SFTKernels", targets: ["SFTKernels"]),
        .executable(name: "sftctl", targets: ["sftctl"]),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // No unsafe flags anywhere, so a tagged version of this package can be a dependency
        // (tools/consumer-check). The C shim gets SwiftPM's own flags: -O2 in release builds
        // (its kernels need no -O3 or -fno-math-errno; see docs/ARCHITECTURE.md, "Packaging"),
        // -O0 in debug builds. Warnings in the C code are checked by scripts/test with -Wall.
        .target(name: "CSFTKernels", linkerSettings: [.linkedLibrary("m"), .linkedLibrary("dl")]),
        .target(name: "SFTKernels", dependencies: ["CSFTKernels", "COpenBLAS"]),
        .target(name: "SFTCore", dependencies: ["SFTKernels"]),
        .executableTarget(name: "sftctl", dependencies: ["SFTCore", "COpenBLAS"]),
        .executableTarget(name: "quickstart", dependencies: ["SFTCore"], path: "Examples/quickstart"),
        // The Swift examples (tools/examples-check builds and runs them in CI).
        .executableTarget(name: "finetune-example", dependencies: ["SFTCore"], path: "Examples/finetune"),
        .executableTarget(name: "evaluate-example", dependencies: ["SFTCore"], path: "Examples/evaluate"),
        .executableTarget(name: "merge-export-example", dependencies: ["SFTCore"], path: "Examples/merge-export"),
        .executableTarget(name: "sft-fuzz", dependencies: ["SFTCore"], path: "tools/fuzz/Sources"),
        .testTarget(name: "SFTKernelsTests", dependencies: ["SFTKernels"]),
        .testTarget(name: "SFTCoreTests", dependencies: ["SFTCore"], resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v6]
)
