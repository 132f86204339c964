//! Datasets: the IDX container and MNIST-layout folders (Fashion-MNIST, MNIST).

pub mod idx;
pub mod mnist;
