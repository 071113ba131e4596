// `sftctl inspect`: what a model file or folder holds (format, architecture, parameters,
// tensor types, config, tokenizer, chat template), or with --devices which compute devices
// this machine has (the CUDA libraries found, where the missing ones were looked for, GPUs).
// The summaries come from SFTCore's ModelSummary and SFTKernels' CUDAStatus; this file only
// parses options and prints.
import Foundation
import SFTCore
import SFTKernels

let inspectCommand = Command(
    name: "inspect",
    summary: "show what a model file or folder holds",
    help: """
    usage: sftctl inspect --model PATH [--json]
           sftctl inspect --devices [--json]

    Shows the format, architecture, parameter count, stored tensor types, config values,
    tokenizer kind, special tokens and whether a chat template is present.

      --model PATH   a .gguf file, a .safetensors file or an HF model folder
      --devices      show the devices instead: CPU instruction set, and for CUDA which of
                     libcuda.so.1, libnvrtc and libcublasLt were found where (and every place
                     searched for a missing one; SFT_CUDA_LIBS adds folders), driver (and
                     whether it is sft's emulated GPU, tools/cuda-emulate), GPUs; and the MPI
                     library data-parallel jobs use (Open MPI; SFT_MPI_LIB names it) and
                     NCCL (libnccl.so.2, searched like the CUDA libraries), which sums
                     gradients on the GPUs of a data-parallel CUDA job
      --json         print one JSON object instead of text
    """,
    booleanFlags: ["devices"],
    run: { args in
        if args.flag("devices") {
            let json = args.flag("json")
            try args.finish()
            printDevices(json: json)
            return
        }
        let path = try args.require("model")
        let json = args.flag("json")
        try args.finish()
        let summary = try ModelSummary(url: URL(fileURLWithPath: path))
        if json {
            var o = summary.json.foundationValue as! [String: Any]
            o["path"] = path
            printJSON(o)
        } else {
            print("model:         \(path)")
            for line in summary.lines { print(line) }
        }
    }
)

/// `inspect --devices`: the CPU and what the CUDA loader found.
private func printDevices(json: Bool) {
    let cuda = CUDAStatus.current
    if json {
        func lib(_ l: CUDAStatus.Library) -> [String: Any] {
            ["name": l.name, "path": l.path ?? NSNull(), "tried": l.tried]
        }
        printJSON([
            "cpu": ["instruction_set": CPUBackend.instructionSet, "threads": CPUBackend.shared.threads],
            "cuda": [
                "available": cuda.unavailableReason == nil,
                "reason": cuda.unavailableReason ?? NSNull(),
                "libraries": [lib(cuda.driver), lib(cuda.nvrtc), lib(cuda.cublasLt)],
                "driver_version": cuda.driverVersion ?? NSNull(),
                "emulated": cuda.emulation != nil,
                "nvrtc_version": cuda.nvrtcVersion ?? NSNull(),
                "gpus": cuda.gpus.map { ["ordinal": $0.ordinal, "name": $0.name, "arch": $0.arch,
                                         "multiprocessors": $0.multiprocessors, "memory_bytes": $0.memoryBytes] },
            ] as [String: Any],
            "mpi": ["path": MPILibrary.path ?? NSNull(), "version": MPILibrary.version ?? NSNull(),
                    "reason": MPILibrary.path == nil ? MPILibrary.loadError : NSNull()] as [String: Any],
            "nccl": ["path": NCCLLibrary.path ?? NSNull(), "version": NCCLLibrary.version ?? NSNull(),
                     "tried": NCCLLibrary.path == nil ? NCCLLibrary.tried : NSNull()] as [String: Any],
        ])
    } else {
        print("cpu: \(CPUBackend.instructionSet), \(CPUBackend.shared.threads) threads")
        for line in cuda.lines { print(line) }
        if let path = MPILibrary.path {
            print("mpi: \(MPILibrary.version ?? "unknown version") (\(path)); launch: mpirun -np N sftctl finetune ...")
        } else {
            print("mpi: not available (\(MPILibrary.loadError))")
        }
        if let path = NCCLLibrary.path {
            print("nccl: \(NCCLLibrary.version ?? "unknown version") (\(path)); data-parallel CUDA jobs sum gradients with it")
        } else {
            print("nccl: not found, data-parallel CUDA jobs sum gradients through host memory (tried \(NCCLLibrary.tried))")
        }
    }
}
