;; wasi_p1_raw.wat: preview 1 with no libc between the guest and the host. Run as
;; `wasi_p1_raw raw`: it checks that args_sizes_get counts 2 arguments whose bytes are
;; "wasi_p1_raw\0raw\0" or end with "raw\0" (the runner names argv[0]), that
;; args_get fills them, that fd_write to descriptor 99 is refused with EBADF (8),
;; writes its line as one fd_write of two pieces (a host may write only the first: a short
;; write, after which the rest is written alone), and ends by proc_exit(3). Any check
;; that fails ends it with proc_exit(1) before the line is written.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  ;; 0: argc, 4: argv buffer size, 8: written, 16..: argv pointers, 64..: argv bytes
  ;; 512: iovecs, 1024: the line in two pieces
  (data (i32.const 1024) "raw: args and stdout as written, ")
  (data (i32.const 1100) "bad descriptor refused\n")
  (func $fail (call $proc_exit (i32.const 1)) (unreachable))
  (func $main (export "_start")
    (local $end i32)
    (if (call $args_sizes_get (i32.const 0) (i32.const 4)) (then (call $fail)))
    (if (i32.ne (i32.load (i32.const 0)) (i32.const 2)) (then (call $fail)))
    (if (i32.gt_u (i32.load (i32.const 4)) (i32.const 400)) (then (call $fail)))
    (if (call $args_get (i32.const 16) (i32.const 64)) (then (call $fail)))
    ;; argv[1] is "raw\0", at the pointer args_get stored, ending the buffer.
    (local.set $end (i32.add (i32.const 64) (i32.load (i32.const 4))))
    (if (i32.ne (i32.load (i32.const 20)) (i32.sub (local.get $end) (i32.const 4))) (then (call $fail)))
    (if (i32.ne (i32.load (i32.load (i32.const 20))) (i32.const 0x00776172)) (then (call $fail)))
    ;; Descriptor 99 was never opened.
    (i32.store (i32.const 512) (i32.const 1024))
    (i32.store (i32.const 516) (i32.const 1))
    (if (i32.ne (call $fd_write (i32.const 99) (i32.const 512) (i32.const 1) (i32.const 8)) (i32.const 8))
      (then (call $fail)))
    ;; The line: two pieces, one call.
    (i32.store (i32.const 512) (i32.const 1024))
    (i32.store (i32.const 516) (i32.const 33))
    (i32.store (i32.const 520) (i32.const 1100))
    (i32.store (i32.const 524) (i32.const 23))
    (if (call $fd_write (i32.const 1) (i32.const 512) (i32.const 2) (i32.const 8)) (then (call $fail)))
    (if (i32.eq (i32.load (i32.const 8)) (i32.const 33))
      (then
        (if (call $fd_write (i32.const 1) (i32.const 520) (i32.const 1) (i32.const 8)) (then (call $fail)))
        (if (i32.ne (i32.load (i32.const 8)) (i32.const 23)) (then (call $fail))))
      (else
        (if (i32.ne (i32.load (i32.const 8)) (i32.const 56)) (then (call $fail)))))
    (call $proc_exit (i32.const 3))))
