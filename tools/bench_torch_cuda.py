"""PyTorch on the shapes of Tests/SFTKernelsTests/CUDA/CUDABenchmarks.swift, for the issue's
side-by-side numbers: SDPA (flash) attention forward/backward in bf16, cuBLAS matmul, linear +
cross-entropy. Run on the GPU machine in the same command as the Swift benchmarks, e.g.
    SFT_CUDA_BENCH=1 LD_LIBRARY_PATH=$d/lib $d/sftPackageTests.xctest SFTKernelsTests.CUDABenchmarks \
      | grep '^bench'; python3 tools/bench_torch_cuda.py
Prints one line per op in the same format (median of 5 repeats, CUDA events)."""
import torch
import torch.nn.functional as F


def median_ms(fn, iterations=10, repeats=5):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / iterations)
    return sorted(times)[repeats // 2]


def report(op, shape, ms, flops=None, nbytes=None):
    line = f"{op:<26} {shape:<34} {ms:9.3f} ms"
    if flops:
        line += f"  {flops / ms / 1e9:8.2f} TFLOP/s"
    if nbytes:
        line += f"  {nbytes / ms / 1e6:8.1f} GB/s"
    print(f"bench torch {torch.__version__} {torch.cuda.get_device_name()}: {line}")


def main():
    torch.manual_seed(0)
    dev = "cuda"
    n = 4096
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        report("matmul tf32" if tf32 else "matmul f32", "4096x4096x4096", median_ms(lambda: a @ b.T), 2 * n**3)
    a16, b16 = a.bfloat16(), b.bfloat16()
    report("matmul bf16", "4096x4096x4096", median_ms(lambda: a16 @ b16.T), 2 * n**3)

    for T, H, KV, D in [(2048, 32, 8, 64), (2048, 32, 8, 128), (8192, 32, 8, 64)]:
        q = torch.randn(1, H, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(1, KV, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(1, KV, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True)
        dout = torch.randn(1, H, T, D, device=dev, dtype=torch.bfloat16)
        fwd_flops = 2 * H * D * T * T

        def fwd():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        def fwd_bwd():
            o = fwd()
            o.backward(dout)

        label = f"B=1 T={T} H={H} KV={KV} D={D}"
        f_ms = median_ms(lambda: fwd(), iterations=3)
        fb_ms = median_ms(fwd_bwd, iterations=3)
        report("sdpa fwd bf16", label, f_ms, fwd_flops)
        report("sdpa fwd+bwd bf16", label, fb_ms, 3.5 * fwd_flops)

    N, C, V = 4096, 576, 49152
    x = torch.randn(N, C, device=dev, requires_grad=True)
    w = (0.05 * torch.randn(V, C, device=dev)).requires_grad_()
    t = torch.randint(0, V, (N,), device=dev)
    torch.cuda.reset_peak_memory_stats()

    def xent():
        F.cross_entropy(x @ w.T, t).backward()

    report("linear + xent fwd+bwd f32", f"N={N} C={C} V={V}", median_ms(xent, iterations=3), 6 * N * C * V)
    print(f"bench torch: linear + xent peak memory {torch.cuda.max_memory_allocated() >> 20} MiB")

    m = 64 << 20
    p, r = torch.randn(m, device=dev), torch.randn(m, device=dev)
    report("add f32", "n=64M", median_ms(lambda: p + r), nbytes=12 * m)


if __name__ == "__main__":
    main()
