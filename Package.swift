// swift-tools-version:6.0
// sft: supervised finetuning of instruction-following LLMs, library first.
// No package dependencies: native code only through the system library COpenBLAS and the C shim
// CSFTKernels (CPU loops and the run-time CUDA loader).
import PackageDescription

// The C shim is compiled with optimization in every configuration: Swift debug builds are
// slow for numeric loops, so the hot loops live in C and stay fast in `swift build` too.
let kernelCFlags: [CSetting] = [.unsafeFlags(["-O3", "-fno-math-errno", "-Wall"])]

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
        .target(name: "CSFTKernels", cSettings: kernelCFlags, linkerSettings: [.linkedLibrary("m"), .linkedLibrary("dl")]),
        .target(name: "SFTKernels", dependencies: ["CSFTKernels", "COpenBLAS"]),
        .target(name: "SFTCore", dependencies: ["SFTKernels"]),
        .executableTarget(name: "sftctl", dependencies: ["SFTCore", "COpenBLAS"]),
        .executableTarget(name: "quickstart", dependencies: ["SFTCore"], path: "Examples/quickstart"),
        .executableTarget(name: "sft-fuzz", dependencies: ["SFTCore"], path: "tools/fuzz/Sources"),
        .testTarget(name: "SFTKernelsTests", dependencies: ["SFTKernels"]),
        .testTarget(name: "SFTCoreTests", dependencies: ["SFTCore"], resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v5]
)
