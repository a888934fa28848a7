//! DeepSeek-V4 in Burn: configuration, checkpoint inventory and the model itself, generic over
//! the backend. One paper concept per module.

pub mod attention;
pub mod balance;
pub mod balance_loss;
pub mod block;
pub mod compressor;
pub mod config;
pub mod config_limits;
pub mod error;
pub mod expert_qat;
pub mod fake_quant;
pub mod hadamard;
pub mod indexer;
pub mod indexer_loss;
pub mod init;
pub mod inventory;
pub mod layer_aux;
pub mod linear;
mod load;
pub mod masks;
pub mod mhc;
pub mod model;
pub mod moe;
pub mod mtp;
pub mod named;
pub mod norm;
pub mod options;
pub mod rope;
pub mod router;
pub mod sample_layout;
pub mod samples;
pub mod sink_attention;
pub mod token_ids;
pub mod util;
pub mod weights;
pub mod window;

pub use config::{ModelConfig, RopeScaling, ScoringFunc};
pub use error::ModelError;
pub use inventory::{inventory, ReleaseDtype, TensorSpec};
pub use layer_aux::{load_ratios, LayerAux, MoeAux};
pub use model::{ModelOutput, V4Model};
pub use options::{AttentionMode, ForwardOptions};
pub use sample_layout::SampleLayout;
pub use samples::SampleBounds;
pub use token_ids::check_token_ids;
pub use weights::{MapSource, WeightSource};
