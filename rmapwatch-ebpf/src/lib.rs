#![no_std]
//! Empty library target: lets rmapwatch declare a build-dependency on this crate
//! so that cargo rebuilds the eBPF object when it changes.
