"""The project's Bazel macros: CUDA compilation with nvcc, the pybind11 engine module, Python tests.

Bazel 4.2.3 has no CUDA rule and rules_cuda cannot be fetched offline, so `cuda_library` calls nvcc
itself (for the architectures in --//tools:cuda_archs) and hands the objects to a cc_library.
"""

load("@cuda//:defs.bzl", "CUDA_PATH", "NVCC")

SettingInfo = provider(doc = "Value of a lab build setting.", fields = ["value"])

def _setting_impl(ctx):
    return [SettingInfo(value = ctx.build_setting_value)]

string_list_setting = rule(
    implementation = _setting_impl,
    build_setting = config.string_list(flag = True),
)

string_setting = rule(
    implementation = _setting_impl,
    build_setting = config.string(flag = True),
)

def _cuda_objects_impl(ctx):
    if not NVCC:
        fail("nvcc not found under %s: install CUDA 13 or set CUDA_PATH (needed by %s)." % (CUDA_PATH, ctx.label))
    archs = ctx.attr._archs[SettingInfo].value
    gencode = []
    for a in archs:
        num = a.replace("sm_", "")
        gencode.append("-gencode=arch=compute_%s,code=sm_%s" % (num, num))
    cc_infos = [d[CcInfo] for d in ctx.attr.deps if CcInfo in d]
    headers = depset(ctx.files.hdrs, transitive = [c.compilation_context.headers for c in cc_infos])
    incs = ["-I."]
    for c in cc_infos:
        for d in c.compilation_context.includes.to_list() + c.compilation_context.system_includes.to_list() + c.compilation_context.quote_includes.to_list():
            incs.append("-I" + d)
    incs.append("-I" + ctx.genfiles_dir.path)
    objs = []
    reports = []
    for src in ctx.files.srcs:
        obj = ctx.actions.declare_file("_cuda_objs/%s/%s.pic.o" % (ctx.label.name, src.basename[:-3]))
        # ptxas's resource report of every kernel (registers, spills, shared memory): the output group
        # "ptxas", read by py/tests/test_kernel_resources.py. nvcc's other messages still reach the log.
        report = ctx.actions.declare_file("_cuda_objs/%s/%s.ptxas.txt" % (ctx.label.name, src.basename[:-3]))
        args = [NVCC, "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-lineinfo", "-Xcompiler", "-fPIC", "-Xptxas", "-v"] + gencode + incs + ctx.attr.copts + ["-c", src.path, "-o", obj.path]
        ctx.actions.run_shell(
            inputs = depset([src], transitive = [headers]),
            outputs = [obj, report],
            # nvcc names its temporary files after its process id, which is the same in every sandbox's
            # PID namespace: concurrent nvcc actions sharing /tmp collided ("cudafe1.cpp: No such
            # file"). Each action gets its own TMPDIR.
            command = 'export TMPDIR="$(mktemp -d)" && trap \'rm -rf "$TMPDIR"\' EXIT && ' + " ".join(args) +
                      " 2> " + report.path + "; rc=$?; grep -v -e '^ptxas info' -e '^    ' " + report.path +
                      " >&2; exit $rc",
            mnemonic = "Nvcc",
            progress_message = "nvcc %s (%s)" % (src.short_path, ",".join(archs)),
            use_default_shell_env = True,
        )
        objs.append(obj)
        reports.append(report)
    return [DefaultInfo(files = depset(objs)), OutputGroupInfo(ptxas = depset(reports))]

_cuda_objects = rule(
    implementation = _cuda_objects_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = [".cu"]),
        "hdrs": attr.label_list(allow_files = True),
        "deps": attr.label_list(),
        "copts": attr.string_list(),
        "_archs": attr.label(default = "//tools:cuda_archs"),
    },
)

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], **kwargs):
    """A cc_library of CUDA code: nvcc compiles `srcs` for --//tools:cuda_archs; links cudart_static."""
    _cuda_objects(
        name = name + "_objs",
        srcs = srcs,
        hdrs = hdrs,
        deps = deps + ["@cuda//:cuda_headers"],
        copts = copts,
    )
    native.cc_library(
        name = name,
        srcs = [name + "_objs"],
        hdrs = hdrs,
        deps = deps + ["@cuda//:cudart_static"],
        **kwargs
    )

def cuda_binary(name, srcs, deps = [], **kwargs):
    """A standalone CUDA program (a kernel-lab probe): its sources as a cuda_library `<name>_lib`, linked
    into the cc_binary `<name>` (copied into the GPU bundle's tools/ with the other binaries of //cuda)."""
    cuda_library(name = name + "_lib", srcs = srcs, deps = deps, alwayslink = True)
    native.cc_binary(name = name, deps = [":" + name + "_lib"], **kwargs)

def pybind_extension(name, srcs, deps = [], **kwargs):
    """A pybind11 module `<name>.so` for the Python chosen by --//tools:target_python (host or 3.12)."""
    native.cc_binary(
        name = name + ".so",
        srcs = srcs,
        linkshared = True,
        linkstatic = True,
        copts = ["-fvisibility=hidden"],
        deps = deps + ["@lab_python//:pybind11_headers"] + select({
            "//tools:python312": ["@cpython312//:python_headers"],
            "//conditions:default": ["@lab_python//:python_headers"],
        }),
        **kwargs
    )

def lab_py_test(name, srcs, deps = [], data = [], args = [], size = "medium", tags = [], **kwargs):
    """A pytest file run under the project virtualenv; pytest's exit code is the test's result."""
    native.py_test(
        name = name,
        srcs = srcs + ["//py/tests:pytest_main.py"],
        main = "//py/tests:pytest_main.py",
        args = ["$(location %s)" % s for s in srcs if s.split("/")[-1].startswith("test_")] + args,
        deps = deps + ["//py/tests:conftest"],
        data = data,
        size = size,
        tags = tags,
        python_version = "PY3",
        **kwargs
    )
