;; wasi_p3_args.wat: a WASI 0.3 (preview 3) command, as a component: it exports
;; `wasi:cli/run@0.3.0` (an async function, lifted synchronously) and reads its arguments
;; through `wasi:cli/environment@0.3.0`. `run` returns ok when there are three arguments
;; (the program's name, anything, "p3ok") and the third is exactly "p3ok", else err: the
;; runner sees exit 0 or 1, so both the arguments and the result's mapping to an exit
;; status are checked.
(component
  (import "wasi:cli/environment@0.3.0" (instance $env
    (export "get-arguments" (func (result (list string))))))
  (core module $heap
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $at i32)
      (local.set $at (i32.and (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
                              (i32.sub (i32.const 0) (local.get $align))))
      (global.set $next (i32.add (local.get $at) (local.get $size)))
      (local.get $at)))
  (core instance $heap (instantiate $heap))
  (core func $get-arguments (canon lower (func $env "get-arguments")
    (memory (core memory $heap "memory")) (realloc (core func $heap "realloc"))))
  (core module $main
    (import "host" "memory" (memory 1))
    (import "host" "get-arguments" (func $get-arguments (param i32)))
    (func (export "run") (result i32)
      (local $list i32)
      (call $get-arguments (i32.const 0))
      (if (i32.ne (i32.load (i32.const 4)) (i32.const 3)) (then (return (i32.const 1))))
      (local.set $list (i32.load (i32.const 0)))
      (if (i32.ne (i32.load (i32.add (local.get $list) (i32.const 20))) (i32.const 4)) (then (return (i32.const 1))))
      (if (i32.ne (i32.load (i32.load (i32.add (local.get $list) (i32.const 16)))) (i32.const 0x6b6f3370))
        (then (return (i32.const 1))))
      (i32.const 0)))
  (core instance $host
    (export "memory" (memory $heap "memory"))
    (export "get-arguments" (func $get-arguments)))
  (core instance $main (instantiate $main (with "host" (instance $host))))
  (type $run (func async (result (result))))
  (func $run (type $run) (canon lift (core func $main "run")))
  (instance $exports (export "run" (func $run)))
  (export "wasi:cli/run@0.3.0" (instance $exports)))
