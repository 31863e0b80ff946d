//! The lying signer node in-process: the one liar of
//! `permafrost_simulations::chaos::liar` (also behind `permafrost-liar`), served
//! on a task of the test's runtime with its events discarded.

use permafrost_proto::signer_node_client::SignerNodeClient;
use permafrost_proto::tls::TlsMaterial;
use permafrost_simulations::chaos::liar::{self, LiarOptions};
use tonic::transport::Channel;

use crate::Running;

pub use permafrost_simulations::chaos::liar::Lie;

/// Serves a liar for `upstream` on `listener` with the node's identity `tls`
/// (a DKG lie alters `tamper_sender`'s messages).
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    tls: TlsMaterial,
    upstream: SignerNodeClient<Channel>,
    lie: Lie,
    tamper_sender: Option<String>,
) -> Running {
    let mut options = LiarOptions::new(lie);
    options.tamper_sender = tamper_sender;
    Running::spawn(None, |shutdown| async move {
        liar::serve(listener, &tls, upstream, options, shutdown).await
    })
}
