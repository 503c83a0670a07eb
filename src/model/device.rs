//! Choosing the device: `auto`, `cpu`, `cuda` or `cuda:N`. Asking for CUDA where libtorch sees no
//! GPU is an error, never a silent CPU run.

use crate::error::{Error, Result};
use tch::{Cuda, Device};

/// Resolve a `--device` value.
pub fn resolve_device(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    let cuda = |index: usize| -> Result<Device> {
        if let Err(e) = crate::native::torch_cuda() {
            return Err(Error::Invalid(format!(
                "--device {spec}: {e}; use --device cpu"
            )));
        }
        if !Cuda::is_available() {
            return Err(Error::Invalid(format!(
                "--device {spec}: libtorch sees no CUDA device (is a GPU visible? `cbqa doctor` \
                 shows what was found); use --device cpu"
            )));
        }
        let n = Cuda::device_count() as usize;
        if index >= n {
            return Err(Error::Invalid(format!(
                "--device {spec}: there are only {n} CUDA device(s)"
            )));
        }
        Ok(Device::Cuda(index))
    };
    match spec {
        "auto" => Ok(match crate::native::torch_cuda() {
            Ok(_) => Device::cuda_if_available(),
            Err(_) => Device::Cpu,
        }),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        _ => match spec.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(Error::Invalid(format!(
                "--device {spec}: expected auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_absent_cuda() {
        assert_eq!(resolve_device("cpu").unwrap(), Device::Cpu);
        assert!(resolve_device("gpu").is_err());
        assert!(resolve_device("cuda:x").is_err());
        // setup.sh installs the CUDA build of torch: its CUDA part loads (at run time, see
        // native::torch_cuda) even where there is no GPU
        let cuda = crate::native::torch_cuda().expect("libtorch_cuda.so should load");
        assert!(cuda.exists(), "{}", cuda.display());
        if !Cuda::is_available() {
            assert_eq!(resolve_device("auto").unwrap(), Device::Cpu);
            let e = resolve_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("CUDA") && e.contains("--device cpu"), "{e}");
            assert!(resolve_device("cuda").is_err());
        }
    }
}
