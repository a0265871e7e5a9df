export * from './clab';
export * from './containerlab-sync';
export * from './etcd';
export * from './frr';
export * from './gobgp';
export * from './netns';
export * from './topology';
export * from './util';
