//! The command-line interface: argument parsing and one function per command. The binary only
//! calls [`main`].

pub mod args;
mod run;
mod summary;

use clap::Parser;

use crate::error::{Error, Result};
use crate::ir::Model;
use crate::onnx::decode_file;
use args::{Cli, Command};

/// Runs the command line; returns the process exit code. Errors are printed as one line.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Some(Command::Inspect { model, json }) => {
            let loaded = decode_file(&model)?;
            let file_len = loaded.file_len;
            let m = Model::from_proto(loaded.model)?;
            let _ = (file_len, json, &m);
            Err(Error::Usage("`inspect` is not wired yet".into()))
        }
        Some(Command::Show { model }) => {
            let m = load(&model)?;
            let _ = m;
            Err(Error::Usage("`show` is not wired yet".into()))
        }
        Some(Command::Diff { a, b }) => {
            let (a, b) = (load(&a)?, load(&b)?);
            let _ = (a, b);
            Err(Error::Usage("`diff` is not wired yet".into()))
        }
        Some(Command::Verify {
            a,
            b,
            inputs,
            report_json,
        }) => run::verify_command(&a, &b, &inputs, report_json.as_deref()),
        None => {
            if cli.run.list_rules {
                print!("{}", run::list_rules());
                return Ok(0);
            }
            run::main_job(&cli.run)
        }
    }
}

/// Decodes a model file into the IR.
pub(crate) fn load(path: &std::path::Path) -> Result<Model> {
    Model::from_proto(decode_file(path)?.model)
}
