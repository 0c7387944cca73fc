;; weir's WASI-free preview 1 adapter, for core modules that import `wasi_snapshot_preview1`
;; (Go's runtime; C through libc's stdio or strtod) while weir grants no WASI at all. wit-component links it in place of the usual WASI
;; adapter: its exports answer the guest's preview 1 imports, and it imports only weir's own
;; `weir:plugin/clock` and `weir:plugin/log` (world `host-capabilities`).
;;
;; What a guest gets:
;; - clock_time_get: realtime from `now-ms`, monotonic from `monotonic-ns`;
;; - random_get: a xorshift sequence seeded from the monotonic clock (not for secrets);
;; - fd_write to stdout/stderr: each buffer becomes one weir log line (info / error), which
;;   must be UTF-8; other descriptors fail with EBADF;
;; - no arguments, no environment, no preopened directories (EBADF), sched_yield succeeds;
;; - poll_oneoff (sleeping, timers) and proc_exit trap: a handler cannot block or exit.
;;
;; An adapter may not have data segments: everything lives in locals, one global and the
;; main module's memory (imported as env.memory).
(module
  (import "env" "memory" (memory 0))
  (import "weir:plugin/clock@0.1.1" "now-ms" (func $now_ms (result i64)))
  (import "weir:plugin/clock@0.1.1" "monotonic-ns" (func $monotonic_ns (result i64)))
  (import "weir:plugin/log@0.1.1" "log" (func $log (param i32 i32 i32)))

  (global $rng (mut i64) (i64.const 0))

  (func (export "clock_time_get") (param $id i32) (param $precision i64) (param $out i32) (result i32)
    (i64.store (local.get $out)
      (if (result i64) (i32.eqz (local.get $id))
        (then (i64.mul (call $now_ms) (i64.const 1000000)))
        (else (call $monotonic_ns))))
    (i32.const 0))

  (func (export "clock_res_get") (param $id i32) (param $out i32) (result i32)
    (i64.store (local.get $out) (i64.const 1))
    (i32.const 0))

  (func (export "random_get") (param $buf i32) (param $len i32) (result i32)
    (local $x i64)
    (local.set $x (global.get $rng))
    (if (i64.eqz (local.get $x))
      (then (local.set $x (i64.or (call $monotonic_ns) (i64.const 1)))))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        ;; xorshift64
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
        (i64.store8 (local.get $buf) (local.get $x))
        (local.set $buf (i32.add (local.get $buf) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (global.set $rng (local.get $x))
    (i32.const 0))

  (func (export "fd_write") (param $fd i32) (param $iovs i32) (param $n i32) (param $written i32) (result i32)
    (local $total i32)
    (local $len i32)
    (if (i32.gt_u (i32.sub (local.get $fd) (i32.const 1)) (i32.const 1))
      (then (return (i32.const 8))))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $len (i32.load offset=4 (local.get $iovs)))
        (if (local.get $len)
          (then
            (call $log
              ;; level: info for stdout, error for stderr
              (select (i32.const 2) (i32.const 4) (i32.eq (local.get $fd) (i32.const 1)))
              (i32.load (local.get $iovs))
              (local.get $len))))
        (local.set $total (i32.add (local.get $total) (local.get $len)))
        (local.set $iovs (i32.add (local.get $iovs) (i32.const 8)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $written) (local.get $total))
    (i32.const 0))

  (func $no_strings (param $count i32) (param $size i32) (result i32)
    (i32.store (local.get $count) (i32.const 0))
    (i32.store (local.get $size) (i32.const 0))
    (i32.const 0))
  (func (export "args_sizes_get") (param i32 i32) (result i32)
    (call $no_strings (local.get 0) (local.get 1)))
  (func (export "environ_sizes_get") (param i32 i32) (result i32)
    (call $no_strings (local.get 0) (local.get 1)))
  (func (export "args_get") (param i32 i32) (result i32) (i32.const 0))
  (func (export "environ_get") (param i32 i32) (result i32) (i32.const 0))

  (func (export "sched_yield") (result i32) (i32.const 0))
  (func (export "proc_exit") (param i32) (unreachable))
  (func (export "poll_oneoff") (param i32 i32 i32 i32) (result i32) (unreachable))

  ;; No file descriptors besides stdout and stderr: EBADF (8).
  (func (export "fd_close") (param i32) (result i32) (i32.const 8))
  (func (export "fd_read") (param i32 i32 i32 i32) (result i32) (i32.const 8))
  (func (export "fd_seek") (param i32 i64 i32 i32) (result i32) (i32.const 8))
  (func (export "fd_fdstat_get") (param i32 i32) (result i32) (i32.const 8))
  (func (export "fd_fdstat_set_flags") (param i32 i32) (result i32) (i32.const 8))
  (func (export "fd_filestat_get") (param i32 i32) (result i32) (i32.const 8))
  (func (export "fd_prestat_get") (param i32 i32) (result i32) (i32.const 8))
  (func (export "fd_prestat_dir_name") (param i32 i32 i32) (result i32) (i32.const 8))
)
