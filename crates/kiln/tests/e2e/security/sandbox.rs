//! The sandbox's edges: heredoc names, devices, bind mounts, the network, COPY's mounts and
//! resource limits.
